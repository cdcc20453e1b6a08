/**
 * `tenant update-image` goes one machine at a time and stops at the first
 * failure, saying what was updated, what failed and what was not attempted;
 * a re-run finishes the job and skips what is already on the image.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { admin, startSim, template } from "./admin_helpers.ts";

Deno.test("update-image stops at the first failure with a summary; a re-run completes", async () => {
  const sim = await startSim();
  try {
    const tpl = join(sim.dir, "t.toml");
    await Deno.writeTextFile(tpl, template(3));
    const made = await admin(sim, [
      "tenant",
      "create",
      "acme",
      "--template",
      tpl,
      "--access-token",
      "a-token-long-enough-0123456789abcdef",
      "--json",
    ]);
    assert.equal(made.code, 0, made.stderr);
    const ids: string[] = JSON.parse(made.stdout).machines.map((m: { id: string }) => m.id);
    const image = "registry.fly.io/vault-tenants/init:v3";
    // The second machine's update is refused for good.
    sim.faults.push({
      match: { method: "POST", pathRegex: `/machines/${ids[1]}$` },
      kind: "500",
      times: 1e9,
    });
    const r = await admin(sim, [
      "--deadline",
      "1",
      "tenant",
      "update-image",
      "--image",
      image,
      "--tenant",
      "acme",
    ]);
    assert.equal(r.code, 1);
    assert.match(r.stdout, new RegExp(`updated 1: ${ids[0]}`));
    assert.match(
      r.stdout,
      new RegExp(`FAILED ${ids[1]}: POST /v1/apps/vault-tenants/machines/${ids[1]}: 500`),
    );
    assert.match(r.stdout, new RegExp(`not attempted 1: ${ids[2]}`));
    assert.match(r.stderr, /error\[admin.update_failed\]/);
    const images = ids.map((id) => sim.state.machines.get(id)!.config.image);
    assert.deepEqual(images.map((i) => i === image), [true, false, false]);
    assert.equal(sim.state.machines.get(ids[0])!.state, "started");

    sim.faults.splice(0, Infinity);
    const again = await admin(sim, [
      "tenant",
      "update-image",
      "--image",
      image,
      "--all-tenants",
      "--json",
    ]);
    assert.equal(again.code, 0, again.stderr);
    const s = JSON.parse(again.stdout);
    assert.deepEqual(s.unchanged, [ids[0]]);
    assert.deepEqual(s.updated, [ids[1], ids[2]]);
    for (const id of ids) {
      const m = sim.state.machines.get(id)!;
      assert.equal(m.config.image, image);
      assert.equal(m.state, "started");
    }
    const usage = await admin(sim, ["tenant", "update-image", "--image", image]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--tenant ID or --all-tenants/);
  } finally {
    await sim.close();
  }
});
