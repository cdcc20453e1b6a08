import assert from "node:assert/strict";
import { join } from "node:path";
import { prepareExec, vaultLoginShell } from "./exec.ts";
import { ExecRequest } from "../protocol/mod.ts";

Deno.test("the login shell: root's in the rootfs's /etc/passwd when present, else /bin/sh", async () => {
  const root = await Deno.makeTempDir();
  try {
    assert.equal(await vaultLoginShell(root), "/bin/sh", "no passwd");
    await Deno.mkdir(join(root, "etc"));
    await Deno.mkdir(join(root, "usr/bin"), { recursive: true });
    await Deno.writeTextFile(
      join(root, "etc/passwd"),
      "daemon:x:1:1::/:/bin/false\nroot:x:0:0:root:/root:/usr/bin/zsh\n",
    );
    assert.equal(await vaultLoginShell(root), "/bin/sh", "named but missing");
    await Deno.writeTextFile(join(root, "usr/bin/zsh"), "");
    assert.equal(await vaultLoginShell(root), "/usr/bin/zsh");
    // A link out of the rootfs is resolved inside it, never on the host.
    await Deno.remove(join(root, "usr/bin/zsh"));
    await Deno.symlink("/bin/sh", join(root, "usr/bin/zsh"));
    assert.equal(await vaultLoginShell(root), "/bin/sh");

    const req = (o: Record<string, unknown>) => ExecRequest.parse({ type: "exec", ...o });
    const shell = await prepareExec(req({ argv: ["ls / | head"], shell: true }), root);
    assert.deepEqual(shell, {
      ok: true,
      argv: ["/bin/sh", "-c", "ls / | head"],
      cwd: "/root",
      env: { SHELL: "/bin/sh" },
    });
    const plain = await prepareExec(req({ argv: ["ls", "-l"], cwd: "/etc" }), root);
    assert.deepEqual(plain, { ok: true, argv: ["ls", "-l"], cwd: "/etc", env: {} });
    const missing = await prepareExec(req({ argv: ["pwd"], cwd: "/nope" }), root);
    assert.equal(missing.ok, false);
    assert.ok(!missing.ok && missing.code === "exec.no_cwd");
    assert.ok(!missing.ok && missing.message === "/nope: no such directory in the vault");
    assert.ok(!missing.ok && !missing.message.includes(root));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
