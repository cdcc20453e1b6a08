/**
 * Request and reply shapes against Fly's published Machines API: the
 * OpenAPI 3 spec in tests/fixtures (a verbatim copy, source named there). Every request the
 * admin sends to flysim and every reply flysim gives is checked against the
 * spec's schema for that path and method: types, enums, required fields, and
 * no property the spec does not define.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { createTenant, deleteTenant, renderTemplate, updateImage } from "../src/admin/mod.ts";
import { APP, fastClient, ROOT, startSim, template, TOKEN } from "./admin_helpers.ts";

const SPEC_PATH = join(ROOT, "tests", "fixtures", "fly-machines-openapi.json");

// deno-lint-ignore no-explicit-any
type Schema = any;
const spec: Schema = JSON.parse(await Deno.readTextFile(SPEC_PATH));

/** Fields the docs require though the spec marks nothing required. */
const REQUIRED_BY_DOCS: Record<string, string[]> = {
  CreateMachineRequest: ["config"],
  UpdateMachineRequest: ["config"],
  "fly.MachineConfig": ["image"],
  CreateVolumeRequest: ["name", "region"],
  "fly.MachineMount": ["path"],
};
/** Fields the reference notes call nullable (Fly sends null for "not attached"). */
const NULLABLE = new Set(["Volume.attached_machine_id", "Volume.attached_alloc_id"]);

function resolve(s: Schema): { schema: Schema; name?: string } {
  if (s?.$ref) {
    const name = s.$ref.replace("#/components/schemas/", "");
    const schema = spec.components.schemas[name];
    assert.ok(schema, `spec has ${s.$ref}`);
    return { schema, name };
  }
  return { schema: s };
}

/** Validates `value` against a spec schema; returns the problems found. */
function check(s: Schema, value: unknown, at: string, problems: string[] = []): string[] {
  const { schema, name } = resolve(s);
  if (schema.allOf) {
    for (const part of schema.allOf) check(part, value, at, problems);
    if (!schema.properties) return problems;
  }
  const type = schema.type ?? (schema.properties ? "object" : undefined);
  if (type === "object") {
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problems.push(`${at}: expected object, got ${JSON.stringify(value)}`);
      return problems;
    }
    const required = [...(schema.required ?? []), ...(name ? REQUIRED_BY_DOCS[name] ?? [] : [])];
    for (const key of required) {
      if (!(key in value)) problems.push(`${at}: missing required ${key}`);
    }
    for (const [key, v] of Object.entries(value)) {
      const prop = schema.properties?.[key];
      if (prop) {
        if (v === null && name && NULLABLE.has(`${name}.${key}`)) continue;
        check(prop, v, `${at}.${key}`, problems);
      } else if (schema.additionalProperties && typeof schema.additionalProperties === "object") {
        check(schema.additionalProperties, v, `${at}.${key}`, problems);
      } else if (schema.properties && schema.additionalProperties !== true) {
        // A schema that lists properties is closed here; a bare `type: object` is free-form.
        problems.push(`${at}: property ${key} is not in ${name ?? "the schema"}`);
      }
    }
    return problems;
  }
  if (type === "array") {
    if (!Array.isArray(value)) problems.push(`${at}: expected array`);
    else value.forEach((v, i) => check(schema.items, v, `${at}[${i}]`, problems));
    return problems;
  }
  const ok = type === "string"
    ? typeof value === "string"
    : type === "integer"
    ? Number.isInteger(value)
    : type === "number"
    ? typeof value === "number"
    : type === "boolean"
    ? typeof value === "boolean"
    : true;
  if (!ok) problems.push(`${at}: expected ${type}, got ${JSON.stringify(value)}`);
  if (schema.enum && !schema.enum.includes(value)) {
    problems.push(`${at}: ${JSON.stringify(value)} not in ${schema.enum.join("|")}`);
  }
  return problems;
}

/** The spec path template (and operation) matching a concrete `/v1/...` path. */
function operation(method: string, path: string) {
  const rel = path.replace(/^\/v1/, "");
  for (const [tpl, ops] of Object.entries(spec.paths) as [string, Schema][]) {
    const re = new RegExp("^" + tpl.replace(/\{[^}]+\}/g, "[^/]+") + "$");
    if (re.test(rel) && ops[method.toLowerCase()]) {
      return { tpl, op: ops[method.toLowerCase()] };
    }
  }
  return undefined;
}

Deno.test("the spec is the one the reference notes describe", () => {
  assert.equal(spec.openapi, "3.0.1");
  assert.equal(Object.keys(spec.paths).length, 53);
});

Deno.test("the admin's requests and flysim's replies match the Machines API spec", async () => {
  const sim = await startSim();
  try {
    const client = fastClient(sim, 5_000);
    const plan = renderTemplate(template(2), { tenantId: "acme", accessToken: "t" });
    await createTenant(client, plan);
    await updateImage(client, { image: "registry.fly.io/vault-tenants/init:v2", tenant: "acme" });
    // Exercise the read side too, so the replies below cover every endpoint the admin uses.
    const [m] = await client.listMachines({ metadata: { fly_vault_tenant: "acme" } });
    await client.machineEvents(m.id, 5);
    await client.getVolume(m.config!.mounts![0].volume!);
    await client.listMachines({ includeDeleted: true, summary: true });
    await deleteTenant(client, "acme");

    // Requests: a known path and method, known query parameters, bodies of the right shape.
    let bodies = 0;
    const seen = new Set<string>();
    for (const r of sim.requests) {
      const found = operation(r.method, r.path);
      assert.ok(found, `${r.method} ${r.path} is in the spec`);
      seen.add(`${r.method} ${found.tpl}`);
      const params = new Set((found.op.parameters ?? []).map((p: Schema) => p.name));
      for (const q of Object.keys(r.query)) {
        // metadata.KEY filters are documented (docs: machines list), though not in the spec.
        if (q.startsWith("metadata.") && found.tpl === "/apps/{app_name}/machines") continue;
        assert.ok(params.has(q), `${r.method} ${found.tpl}: query ${q} is in the spec`);
        const p = found.op.parameters.find((x: Schema) => x.name === q);
        const v = r.query[q];
        if (p.schema?.type === "boolean") assert.match(v, /^(true|false)$/);
        if (p.schema?.type === "integer") assert.match(v, /^\d+$/);
      }
      if (r.body !== undefined) {
        const schema = found.op.requestBody?.content?.["application/json"]?.schema;
        assert.ok(schema, `${r.method} ${found.tpl} takes a body`);
        assert.deepEqual(check(schema, r.body, `${r.method} ${found.tpl}`), []);
        bodies++;
      }
    }
    assert.ok(bodies >= 6, `checked ${bodies} request bodies`);
    for (
      const op of [
        "POST /apps/{app_name}/volumes",
        "POST /apps/{app_name}/machines",
        "POST /apps/{app_name}/machines/{machine_id}",
        "GET /apps/{app_name}/machines/{machine_id}/wait",
        "POST /apps/{app_name}/machines/{machine_id}/stop",
        "DELETE /apps/{app_name}/machines/{machine_id}",
        "DELETE /apps/{app_name}/volumes/{volume_id}",
      ]
    ) assert.ok(seen.has(op), `the admin used ${op}`);

    // Replies: fetch each endpoint the admin reads and check it against the 200 schema.
    await createTenant(
      client,
      renderTemplate(template(1), { tenantId: "globex", accessToken: "t" }),
    );
    const g = [...sim.state.machines.values()].find((x) =>
      x.config.metadata?.fly_vault_tenant === "globex"
    )!;
    const vol = g.config.mounts![0].volume;
    const base = `/v1/apps/${APP}`;
    const replies: Array<[string, string]> = [
      ["GET", `${base}/machines`],
      ["GET", `${base}/machines?include_deleted=true`],
      ["GET", `${base}/machines?summary=true`],
      ["GET", `${base}/machines/${g.id}`],
      ["GET", `${base}/machines/${g.id}/events`],
      ["GET", `${base}/machines/${g.id}/wait?state=started&timeout=5`],
      ["GET", `${base}/volumes`],
      ["GET", `${base}/volumes/${vol}`],
    ];
    for (const [method, path] of replies) {
      const res = await fetch(sim.baseUrl + path, {
        method,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.equal(res.status, 200, path);
      const body = await res.json();
      const found = operation(method, path.split("?")[0])!;
      const schema = found.op.responses["200"].content["application/json"].schema;
      assert.deepEqual(check(schema, body, `${method} ${path}`), []);
      if (Array.isArray(body)) assert.ok(body.length > 0, `${path} returned something`);
    }
    // Errors come in Fly's ErrorResponse shape.
    const errorSchema = { $ref: "#/components/schemas/ErrorResponse" };
    for (
      const [path, token, status] of [
        [`${base}/machines/nope`, TOKEN, 404],
        [`${base}/machines`, "wrong", 401],
        [`${base}/machines/${g.id}/wait?state=bogus`, TOKEN, 400],
      ] as const
    ) {
      const res = await fetch(sim.baseUrl + path, {
        headers: { authorization: `Bearer ${token}` },
      });
      assert.equal(res.status, status);
      const body = await res.json();
      assert.deepEqual(check(errorSchema, body, path), []);
      assert.equal(typeof body.error, "string");
    }
    // The create request flysim received for globex, field by field.
    const create = sim.requests.findLast((r) =>
      r.method === "POST" && r.path === `${base}/machines`
    )!;
    assert.deepEqual(
      check({ $ref: "#/components/schemas/CreateMachineRequest" }, create.body, "create"),
      [],
    );
    // A checker that finds nothing wrong with anything proves nothing: show it rejects.
    assert.notDeepEqual(
      check({ $ref: "#/components/schemas/Volume" }, { id: 1, size_gb: "1", bogus: 1 }, "v"),
      [],
    );
  } finally {
    await sim.close();
  }
});
