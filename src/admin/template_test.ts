import assert from "node:assert/strict";
import { isVaultError } from "../errors/mod.ts";
import {
  checkAccessTokens,
  machineRequest,
  MIN_ACCESS_TOKEN_LENGTH,
  parseVars,
  renderTemplate,
} from "./template.ts";

const README = `version = 1
app = "vault-tenants"
machine_count = 1

[machine]
name = "tenant-{{tenant_id}}-{{index}}"
region = "ord"

[machine.config]
image = "registry.fly.io/vault-tenants/init:latest"

[[machine.config.mounts]]
path = "/data"
name = "tvol_{{tenant_id}}_{{index}}"

[machine.config.env]
ACCESS_TOKEN = "{{access_token}}"
`;

function throwsCode(fn: () => unknown, code: string, message: RegExp) {
  assert.throws(fn, (err) => {
    assert.ok(isVaultError(err, code), String(err));
    assert.match(err.message, message);
    return true;
  });
}

Deno.test("the README template renders volumes, then a machine with tenant metadata", () => {
  const plan = renderTemplate(README, { tenantId: "acme", accessToken: "s3cret" });
  assert.equal(plan.app, "vault-tenants");
  assert.equal(plan.machineCount, 1);
  const [m] = plan.machines;
  assert.deepEqual(m.volumes, [{
    path: "/data",
    request: { name: "tvol_acme_1", region: "ord", size_gb: 1 },
  }]);
  assert.deepEqual(machineRequest(m, ["vol_1"]), {
    name: "tenant-acme-1",
    region: "ord",
    config: {
      image: "registry.fly.io/vault-tenants/init:latest",
      env: { ACCESS_TOKEN: "s3cret" },
      metadata: { fly_vault_tenant: "acme", fly_vault_index: "1" },
      mounts: [{ volume: "vol_1", path: "/data", name: "tvol_acme_1", size_gb: 1 }],
    },
  });
});

Deno.test("index is 1-based per machine; --var values substitute; values cannot break TOML", () => {
  const text = README.replace("machine_count = 1", "machine_count = 3")
    .replace('region = "ord"', 'region = "{{region}}"');
  const plan = renderTemplate(text, {
    tenantId: "acme",
    accessToken: 'a"b\nc = 1',
    vars: parseVars(["region=fra"]),
  });
  assert.deepEqual(plan.machines.map((m) => m.request.name), [
    "tenant-acme-1",
    "tenant-acme-2",
    "tenant-acme-3",
  ]);
  assert.deepEqual(plan.machines.map((m) => m.request.region), ["fra", "fra", "fra"]);
  assert.equal(plan.machines[2].request.config.env?.ACCESS_TOKEN, 'a"b\nc = 1');
  assert.equal(plan.machines[1].request.config.metadata?.fly_vault_index, "2");
});

Deno.test("unknown or unset variables are errors naming the variable and the line", () => {
  throwsCode(
    () => renderTemplate(README, { tenantId: "acme" }, "t.toml"),
    "admin.template",
    /t\.toml line 17 uses \{\{access_token\}\}/,
  );
  throwsCode(
    () =>
      renderTemplate(README.replace('"ord"', '"{{ region }}"'), {
        tenantId: "acme",
        accessToken: "x",
      }),
    "admin.template",
    /line 7: unknown variable \{\{region\}\}/,
  );
});

Deno.test("placeholders on commented-out lines are not checked", () => {
  const text = README.replace(
    'ACCESS_TOKEN = "{{access_token}}"',
    '# ACCESS_TOKEN = "{{access_token}}"',
  );
  const plan = renderTemplate(text, { tenantId: "acme" });
  assert.deepEqual(plan.machines[0].request.config.env, {});
});

Deno.test("bad templates, vars and tenant ids are refused with a reason", () => {
  const opts = { tenantId: "acme", accessToken: "x" };
  throwsCode(() => renderTemplate("version = [", opts), "admin.template", /line 1/);
  throwsCode(
    () => renderTemplate(README.replace("version = 1", "version = 2"), opts),
    "admin.template",
    /version/,
  );
  throwsCode(
    () =>
      renderTemplate(
        README.replace("machine_count = 1", "machine_count = 2").replace("-{{index}}", ""),
        opts,
      ),
    "admin.template",
    /repeats/,
  );
  throwsCode(
    () => renderTemplate(README, { ...opts, tenantId: "Bad Id" }),
    "admin.bad_tenant_id",
    /not valid/,
  );
  throwsCode(
    () => renderTemplate(README, { ...opts, tenantId: "acme-corp" }),
    "admin.template",
    /volume name "tvol_acme-corp_1"/,
  );
  throwsCode(() => parseVars(["novalue"]), "admin.bad_var", /key=value/);
  throwsCode(() => parseVars(["index=3"]), "admin.bad_var", /built-in/);
  throwsCode(
    () =>
      renderTemplate(
        README.replace(
          "[machine.config.env]",
          '[machine.config.metadata]\nfly_vault_tenant = "x"\n[machine.config.env]',
        ),
        opts,
      ),
    "admin.template",
    /set by the admin/,
  );
});

Deno.test("access tokens shorter than 32 characters are refused, wherever they come from", () => {
  const long = "0123456789abcdef0123456789abcdef";
  assert.equal(MIN_ACCESS_TOKEN_LENGTH, 32);
  const ok = renderTemplate(README, { tenantId: "acme", accessToken: long });
  checkAccessTokens(ok, long);
  // From --access-token.
  const short = renderTemplate(README, { tenantId: "acme", accessToken: "s3cret" });
  throwsCode(
    () => checkAccessTokens(short, "s3cret"),
    "admin.weak_access_token",
    /--access-token has 6 characters; at least 32 are required/,
  );
  // From a --var, or written into the template: the machine's env is what counts.
  const viaVar = renderTemplate(README.replace("{{access_token}}", "{{tok}}"), {
    tenantId: "acme",
    vars: parseVars(["tok=short-one"]),
  });
  throwsCode(
    () => checkAccessTokens(viaVar, undefined),
    "admin.weak_access_token",
    /machine #1's ACCESS_TOKEN \(from the template\) has 9 characters/,
  );
  const literal = renderTemplate(README.replace("{{access_token}}", "hunter2"), {
    tenantId: "acme",
  });
  assert.throws(() => checkAccessTokens(literal, undefined), /at least 32/);
  // The error never quotes the token.
  try {
    checkAccessTokens(literal, undefined);
  } catch (err) {
    assert.ok(isVaultError(err));
    assert.ok(!`${err.message} ${err.hint}`.includes("hunter2"));
    assert.match(err.hint, /openssl rand -base64 32/);
  }
  // The dry run's placeholder is not a token.
  const dry = renderTemplate(README, { tenantId: "acme", accessToken: "<redacted>" });
  checkAccessTokens(dry, undefined, "<redacted>");
});
