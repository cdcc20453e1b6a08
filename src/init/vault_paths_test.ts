import assert from "node:assert/strict";
import { hideMachinePaths, inVaultPaths } from "./vault_paths.ts";

Deno.test("error text names vault paths, never the machine's rootfs or volume", () => {
  hideMachinePaths({ rootfsDir: "/tmp/st.x/volumes/m1/rootfs/", dataDir: "/tmp/st.x/volumes/m1" });
  assert.equal(
    inVaultPaths("open '/tmp/st.x/volumes/m1/rootfs/usr/lib/x': Permission denied"),
    "open '/usr/lib/x': Permission denied",
  );
  assert.equal(
    inVaultPaths("cannot open the rootfs /tmp/st.x/volumes/m1/rootfs (errno 2)"),
    "cannot open the rootfs / (errno 2)",
  );
  assert.equal(
    inVaultPaths("rename /tmp/st.x/volumes/m1/rootfs.new failed"),
    "rename <volume>/rootfs.new failed",
  );
  assert.equal(
    inVaultPaths("stat /tmp/st.x/volumes/m10/y"),
    "stat /tmp/st.x/volumes/m10/y",
    "another machine's dir is not ours",
  );
  assert.equal(inVaultPaths("/usr/bin/x: not found"), "/usr/bin/x: not found");
  assert.equal(inVaultPaths(undefined), undefined);
});
