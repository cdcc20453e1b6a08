/**
 * The concrete attacks of issue 14 (pax records GNU tar reads differently
 * from the old filter) and each construct the filter refuses because GNU tar
 * could read it differently. Every case first asks GNU tar itself what it
 * would do with the bytes, so each test shows the danger is real.
 */
import assert from "node:assert/strict";
import { DEFAULT_LIMITS, extractRootfs, removeTree } from "./mod.ts";
import { TAR_ENV } from "./extract.ts";
import { checksumOk, parseNumber, parsePax, RootfsError, TarFilter } from "./tarscan.ts";
import { craft, gz, paxHeader, streamOf, tarOf } from "./testutil.ts";

/** A pax header whose body is exactly `body` (records written by hand). */
function rawPax(body: string, type = "x"): Uint8Array {
  return craft({ name: "PaxHeader", type, data: latin1(body) });
}

function latin1(s: string): Uint8Array {
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}

/** What GNU tar lists for `bytes`: the quoted names (and link targets) it would extract. */
async function tarNames(bytes: Uint8Array): Promise<string> {
  const p = new Deno.Command("tar", {
    args: ["-tv", "--numeric-owner", "--quoting-style=c", "-f", "-"],
    env: { ...TAR_ENV, TZ: "UTC" },
    stdin: "piped",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const w = p.stdin.getWriter();
  await w.write(bytes).catch(() => {});
  await w.close().catch(() => {});
  return new TextDecoder().decode((await p.output()).stdout);
}

/** Runs the filter over `bytes`; returns the error it refused with (or fails). */
function refusal(bytes: Uint8Array): RootfsError {
  const f = new TarFilter({ maxEntries: 1000, spaceLeft: 2 ** 40 }, () => {});
  try {
    f.push(bytes);
    f.finish();
  } catch (err) {
    assert.ok(err instanceof RootfsError, String(err));
    return err;
  }
  assert.fail("the filter accepted the archive");
}

/** A pax record with two blanks after the length: `NN  key=value\n`. */
function twoBlanks(key: string, value: string): string {
  const rest = `  ${key}=${value}\n`;
  let len = rest.length + 2;
  while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
  return `${len}${rest}`;
}

Deno.test("attack: a pax path after two blanks (tar applies it) is refused as ambiguous", async () => {
  const t = tarOf(rawPax(twoBlanks("path", "/etc/evil")), craft({ name: "harmless" }));
  assert.match(await tarNames(t), /"\/etc\/evil"/, "GNU tar reads the path record");
  const err = refusal(t);
  assert.equal(err.code, "rootfs.ambiguous");
  assert.match(err.message, /exactly one space/);
});

Deno.test("attack: a hidden size=0 record smuggling a device and a fifo inside a file", async () => {
  // The filter used to see one 1 KiB file; GNU tar sees an empty file, then the two
  // headers inside its "data": a char device and a fifo outside /dev, one absolute.
  const hidden = new Uint8Array([
    ...craft({ name: "/etc/cdev", type: "3" }),
    ...craft({ name: "etc/fifo", type: "6" }),
  ]);
  const t = tarOf(
    rawPax(twoBlanks("size", "0")),
    craft({ name: "innocent", size: hidden.length }),
    hidden,
  );
  const listed = await tarNames(t);
  assert.match(listed, /^c.*"\/etc\/cdev"$/m, "GNU tar sees the hidden char device");
  assert.match(listed, /^p.*"etc\/fifo"$/m, "GNU tar sees the hidden fifo");
  assert.equal(refusal(t).code, "rootfs.ambiguous");
  // The same through the whole pipeline: refused, and nothing is left behind.
  const dir = await Deno.makeTempDir({ prefix: "fv-tarscan-test-" });
  try {
    await assert.rejects(
      extractRootfs(streamOf(gz(t)), { stagingDir: `${dir}/s`, limits: DEFAULT_LIMITS }),
      (err: unknown) => (err as RootfsError).code === "rootfs.ambiguous",
    );
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await removeTree(dir);
  }
});

Deno.test("attack: an absolute path and devices outside /dev given by a well-formed pax path", async () => {
  const abs = tarOf(paxHeader({ path: "/etc/passwd" }), craft({ name: "harmless" }));
  assert.match(await tarNames(abs), /"\/etc\/passwd"/);
  assert.equal(refusal(abs).code, "rootfs.absolute_path");
  // The ustar name says /dev (where device nodes are skipped); the pax path, which tar uses,
  // does not.
  for (const type of ["3", "6"]) {
    const t = tarOf(paxHeader({ path: "etc/node" }), craft({ name: "dev/null", type }));
    assert.match(await tarNames(t), /"etc\/node"/);
    const err = refusal(t);
    assert.equal(err.code, "rootfs.device");
    assert.equal(err.entry, "etc/node");
  }
});

Deno.test("refused: every other pax form GNU tar reads differently from a plain parser", async () => {
  const body = (rec: string) => tarOf(rawPax(rec), craft({ name: "harmless" }));
  const canon = (k: string, v: string) => {
    const rest = ` ${k}=${v}\n`;
    let len = rest.length + 1;
    while (String(len).length + rest.length !== len) len = String(len).length + rest.length;
    return `${len}${rest}`;
  };
  const good = canon("path", "/etc/evil");
  const cases: Array<[string, string]> = [
    ["a tab after the length", good.replace(" ", "\t")],
    ["a blank before the length", ` ${canon("path", "/etc/evi")}`],
    ["a record after a NUL", `${canon("comment", "")}\x00${good}`],
    ["a length one short", `${Number(good.slice(0, 2)) - 1}${good.slice(2)}`],
    ["no newline", good.replace("\n", "X")],
    ["no '='", canon("path", "x").replace("=", "_")],
    ["a key given twice", canon("path", "good") + good],
  ];
  for (const [what, rec] of cases) {
    assert.equal(refusal(body(rec)).code, "rootfs.ambiguous", what);
  }
  // GNU tar applies the first record and errors on the rest, yet still extracts.
  const partial = body(`${good}5 x\n`);
  assert.match(await tarNames(partial), /"\/etc\/evil"/);
  assert.equal(refusal(partial).code, "rootfs.ambiguous");
  // The canonical form parses, with binary xattr values kept byte-exact.
  const ok = parsePax(
    latin1(canon("path", "a b=c") + canon("SCHILY.xattr.user.k", "\x00\x01\xff")),
  );
  assert.equal(ok.get("path"), "a b=c");
  assert.equal(ok.get("SCHILY.xattr.user.k"), "\x00\x01\xff");
  // Global headers may carry only what changes no entry.
  assert.equal(
    refusal(tarOf(paxHeader({ uid: "0" }, "g"), craft({ name: "f" }))).code,
    "rootfs.bad_header",
  );
  assert.equal(
    refusal(tarOf(paxHeader({ "GNU.sparse.major": "1" }), craft({ name: "f" }))).code,
    "rootfs.unsupported_type",
  );
});

Deno.test("refused: long names, numbers, checksums and hardlink sizes GNU tar reads differently", async () => {
  // A GNU long name without its NUL: tar reads on into the block's padding.
  const name = "evil".padEnd(100, "x");
  const padded = new Uint8Array(512);
  padded.set(latin1(name.slice(0, 50) + "/../../../abs"));
  const longBlock = craft({ name: "././@LongLink", type: "L", size: 50 });
  const lnk = tarOf(longBlock.subarray(0, 512), padded, craft({ name: "x" }));
  assert.match(await tarNames(lnk), /\.\.\/\.\.\/\.\.\/abs/, "tar reads past the size");
  assert.equal(refusal(lnk).code, "rootfs.ambiguous");

  // Base-256 is only 0x80/0xff-led for GNU tar; 0x81 is not a number to it.
  const h = new Uint8Array(12);
  h[0] = 0x80;
  h[11] = 5;
  assert.equal(parseNumber(h, 0, 12, "size"), 5);
  h[0] = 0x81;
  assert.throws(() => parseNumber(h, 0, 12, "size"), /not base-256/);
  // A leading NUL, which tar skips, and an empty field, which tar reads as 0.
  assert.throws(() => parseNumber(latin1("\x000000017\x00"), 0, 10, "size"));
  assert.throws(() => parseNumber(new Uint8Array(12), 0, 12, "size"));
  assert.equal(parseNumber(latin1("  644 \x00"), 0, 7, "mode"), 0o644);

  // A checksum is octal only, counted signed or unsigned.
  const good = craft({ name: "f" }).subarray(0, 512);
  assert.ok(checksumOk(good));
  const b256 = good.slice();
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 0x20 : b256[i];
  b256.set([0x80, 0, 0, 0, 0, 0, sum >> 8, sum & 0xff], 148);
  assert.equal(await tarNames(tarOf(b256)), "", "tar does not take a base-256 checksum");
  assert.throws(
    () => checksumOk(b256),
    (e: unknown) => (e as RootfsError).code === "rootfs.ambiguous",
  );

  // A hardlink's size field is 0 to GNU tar: its "data" would be read as headers.
  const hl = tarOf(
    craft({ name: "a" }),
    craft({ name: "h", type: "1", linkname: "a", size: 512 }),
    craft({ name: "/hidden", type: "6" }),
  );
  assert.match(await tarNames(hl), /"\/hidden"/);
  assert.equal(refusal(hl).code, "rootfs.ambiguous");
});

Deno.test("entry names with escape sequences never reach a message raw", async () => {
  const evil = "\x1b]0;pwned\x07\x1b[2J";
  const cases = [
    tarOf(craft({ name: `${evil}\u202e/../x` })),
    tarOf(rawPax(`99  path=${evil}\n`), craft({ name: `named${evil}` })),
    tarOf(paxHeader({ path: `/${evil}` }), craft({ name: "f" })),
    tarOf(craft({ name: `dir${evil}`, type: "3" })),
    tarOf(paxHeader({ path: `p${evil}`, mtime: `1${evil}` }), craft({ name: "f" })),
  ];
  for (const t of cases) {
    const err = refusal(t);
    // deno-lint-ignore no-control-regex
    assert.doesNotMatch(err.message, /[\x00-\x08\x0a-\x1f\x7f-\x9f\u202e]/, err.message);
    assert.match(err.message, /\\x1b\]0;pwned\\x07/);
  }
  // tar's own complaint about an entry (a file under a file) names it too.
  const dir = await Deno.makeTempDir({ prefix: "fv-tarscan-test-" });
  try {
    const t = tarOf(craft({ name: `d${evil}` }), craft({ name: `d${evil}/f` }));
    await assert.rejects(
      extractRootfs(streamOf(gz(t)), { stagingDir: `${dir}/s`, limits: DEFAULT_LIMITS }),
      (err: unknown) => {
        assert.equal((err as RootfsError).code, "rootfs.tar_failed");
        // deno-lint-ignore no-control-regex
        assert.doesNotMatch((err as Error).message, /[\x00-\x08\x0a-\x1f\x7f-\x9f]/);
        return true;
      },
    );
  } finally {
    await removeTree(dir);
  }
});
