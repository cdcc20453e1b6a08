import assert from "node:assert/strict";
import { isVaultError } from "../errors/mod.ts";
import { machineRequest, parseVars, renderTemplate } from "./template.ts";

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
