/**
 * The files in examples/ are what a user copies: the tenant template renders
 * through the admin's real template code exactly as the README's template
 * does, and the two fly.toml files say what docs/deploy.md relies on (a UDP
 * service on fly-global-services at the same port inside and out; no public
 * service on the tenant app).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { parse } from "smol-toml";
import { renderTemplate } from "../src/admin/mod.ts";
import { ROOT, template } from "./admin_helpers.ts";

const read = (p: string) => Deno.readTextFile(join(ROOT, "examples", p));

Deno.test("examples/tenant.template.toml renders as the README's template does", async () => {
  const text = await read("tenant.template.toml");
  const plan = renderTemplate(text, { tenantId: "acme", accessToken: "s3cret" }, "example");
  const readme = renderTemplate(template(), { tenantId: "acme", accessToken: "s3cret" });
  assert.deepEqual(plan, readme, "same requests as the README's template");
  assert.equal(plan.app, "vault-tenants");
  const m = plan.machines[0];
  assert.equal(m.request.name, "tenant-acme-1");
  assert.equal(m.request.config.image, "registry.fly.io/vault-tenants/init:latest");
  assert.deepEqual(m.request.config.env, { ACCESS_TOKEN: "s3cret" });
  assert.equal(m.volumes[0].request.name, "tvol_acme_1");
  assert.equal(m.volumes[0].path, "/data");
});

interface FlyToml {
  app: string;
  build?: { dockerfile?: string };
  processes?: Record<string, string>;
  services?: Array<{
    protocol: string;
    internal_port: number;
    processes?: string[];
    ports: Array<{ port: number; handlers?: string[] }>;
  }>;
  http_service?: unknown;
}

Deno.test("examples/vault-proxy/fly.toml: UDP on fly-global-services, same port inside and out", async () => {
  const toml = parse(await read("vault-proxy/fly.toml")) as unknown as FlyToml;
  assert.equal(toml.app, "vault-proxy");
  const dockerfile = join(ROOT, "examples", "vault-proxy", toml.build!.dockerfile!);
  assert.equal(dockerfile, join(ROOT, "vault-proxy.Dockerfile"));
  // [processes] gives vault-proxy's arguments: the image's entrypoint must be vault-proxy.
  const entrypoint = (await Deno.readTextFile(dockerfile)).match(/^ENTRYPOINT (.*)$/m)?.[1];
  assert.ok(entrypoint && JSON.parse(entrypoint).at(-1).endsWith("bin/vault-proxy.ts"), entrypoint);
  const udp = toml.services!.filter((s) => s.protocol === "udp");
  assert.equal(udp.length, 1);
  assert.equal(toml.services!.length, 1, "nothing but the UDP service is public");
  assert.deepEqual(udp[0].ports.map((p) => p.port), [udp[0].internal_port]);
  const cmd = toml.processes!.app.split(/\s+/);
  const listen = cmd[cmd.indexOf("--listen") + 1];
  assert.equal(listen, `fly-global-services:${udp[0].internal_port}`);
  const backend = cmd[cmd.indexOf("--backend") + 1];
  assert.match(backend, /^\{machine_id\}\.vm\.vault-tenants\.internal:8443$/);
  assert.deepEqual(udp[0].processes, ["app"]);
});

Deno.test("examples/tenant-app/fly.toml: the tenant app publishes nothing", async () => {
  const toml = parse(await read("tenant-app/fly.toml")) as unknown as FlyToml;
  const tpl = parse(await read("tenant.template.toml")) as { app: string };
  assert.equal(toml.app, tpl.app, "the app the template's machines go in");
  assert.equal(toml.services, undefined, "no [[services]]: 6PN only");
  assert.equal(toml.http_service, undefined, "no [http_service]: 6PN only");
  assert.equal(
    join(ROOT, "examples", "tenant-app", toml.build!.dockerfile!),
    join(ROOT, "Dockerfile"),
  );
  const tenantDockerfile = await Deno.readTextFile(join(ROOT, "Dockerfile"));
  assert.match(tenantDockerfile, /^ENTRYPOINT .*bin\/fly-vault-init\.ts"\]$/m);
});

/** The --help text of one of our programs (bin/NAME.ts). */
async function help(program: string, args: string[]): Promise<string> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--quiet", join(ROOT, "bin", `${program}.ts`), ...args, "--help"],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
}

Deno.test("docs/deploy.md and the proxy's fly.toml use only flags our programs have", async () => {
  const doc = await Deno.readTextFile(join(ROOT, "docs", "deploy.md"));
  const proxyToml = parse(await read("vault-proxy/fly.toml")) as unknown as FlyToml;
  const uses: Array<{ program: string; sub: string[]; line: string }> = [
    { program: "vault-proxy", sub: [], line: proxyToml.processes!.app },
  ];
  // Lines (joined across `\` continuations) that run fly-vault-admin, fly-vault or vault-proxy.
  const lines = doc.replace(/\\\n\s*/g, " ").split("\n");
  for (const line of lines) {
    for (
      const m of line.matchAll(
        /(?:^\s*|npx |`)(fly-vault-admin|fly-vault|vault-proxy)\s+([^#`]*)/g,
      )
    ) {
      const words = m[2].trim().split(/\s+/);
      const sub = m[1] === "fly-vault-admin"
        ? words.slice(0, 2)
        : m[1] === "fly-vault"
        ? words.slice(0, 1)
        : [];
      if (m[1] !== "vault-proxy" && !/^[a-z-]+$/.test(sub.join(""))) continue;
      uses.push({ program: m[1], sub, line: m[2] });
    }
  }
  assert.ok(uses.length >= 15, `found ${uses.length} command lines`);
  const cache = new Map<string, string>();
  for (const use of uses) {
    const key = [use.program, ...use.sub].join(" ");
    if (!cache.has(key)) {
      cache.set(key, (await help(use.program, use.sub)) + (await help(use.program, [])));
    }
    for (const flag of use.line.match(/(?<=^|\s)--[a-z][a-z-]*/g) ?? []) {
      assert.ok(cache.get(key)!.includes(flag), `${key}: ${flag} is not in its --help`);
    }
  }
});
