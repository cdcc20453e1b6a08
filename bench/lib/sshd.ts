/**
 * OpenSSH baseline for benchmarks: Debian's sshd on a loopback port with a
 * throwaway host key and client key (key auth, no passwords), installed with
 * apt-get when missing. Every comparison runs it in the same process run as
 * the fly-vault side, so both see the same machine.
 */
import { join } from "node:path";

async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function have(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Installs openssh-server/-client when sshd is missing (needs root and the Debian mirror). */
export async function ensureOpenSsh(): Promise<void> {
  if (await have("/usr/sbin/sshd") && await have("/usr/bin/ssh")) return;
  console.error("bench: installing openssh-server (apt-get)…");
  await run("apt-get", ["update", "-qq"]);
  await run("apt-get", [
    "install",
    "-y",
    "-qq",
    "--no-install-recommends",
    "openssh-server",
    "openssh-client",
  ]);
}

/** A running sshd. */
export interface Sshd {
  port: number;
  /** ssh argv up to and including the host: append the remote command. */
  ssh: string[];
  stop(): Promise<void>;
}

/** Starts sshd on 127.0.0.1:`port` (random high port by default). */
export async function startSshd(port = 20000 + Math.floor(Math.random() * 20000)): Promise<Sshd> {
  await ensureOpenSsh();
  const dir = await Deno.makeTempDir({ prefix: "fv-sshd-" });
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "host_key")]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "client_key")]);
  await Deno.copyFile(join(dir, "client_key.pub"), join(dir, "authorized_keys"));
  await Deno.chmod(join(dir, "authorized_keys"), 0o600);
  await Deno.mkdir("/run/sshd", { recursive: true });
  const config = [
    `Port ${port}`,
    "ListenAddress 127.0.0.1",
    `HostKey ${join(dir, "host_key")}`,
    `AuthorizedKeysFile ${join(dir, "authorized_keys")}`,
    "PermitRootLogin prohibit-password",
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "UsePAM no",
    "StrictModes no",
    `PidFile ${join(dir, "sshd.pid")}`,
    "LogLevel ERROR",
    "AllowTcpForwarding yes",
  ].join("\n");
  await Deno.writeTextFile(join(dir, "sshd_config"), config + "\n");
  const child = new Deno.Command("/usr/sbin/sshd", {
    args: ["-D", "-e", "-f", join(dir, "sshd_config")],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const ssh = [
    "ssh",
    "-q",
    "-p",
    String(port),
    "-i",
    join(dir, "client_key"),
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "BatchMode=yes",
    "root@127.0.0.1",
  ];
  // Ready when a real login works (no sleeping on a guess).
  for (let i = 0; i < 100; i++) {
    const probe = await new Deno.Command(ssh[0], {
      args: [...ssh.slice(1), "true"],
      stdout: "null",
      stderr: "null",
    }).output();
    if (probe.success) break;
    if (i === 99) throw new Error("sshd did not accept a login");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    ssh,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await child.stderr.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
