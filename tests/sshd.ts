/**
 * A throwaway OpenSSH server on a free loopback port (temp host key, one
 * authorized key, key auth only), for the pipe tests and every ssh baseline
 * in bench/. Installs Debian's openssh-server when it is missing (CI lists
 * it in .ci/apt-packages; a bench on a fresh machine installs it itself).
 *
 * @module
 */

/** Runs a command to completion and returns its output as text too. */
export async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: out.stdout, out: text(out.stdout), err: text(out.stderr) };
}

async function have(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** Installs openssh-server/-client when sshd is missing (root and Debian's mirror needed). */
export async function ensureOpenSsh(): Promise<void> {
  if (await have("/usr/sbin/sshd") && await have("/usr/bin/ssh")) return;
  console.error("installing openssh-server (apt-get)…");
  for (const args of [["update", "-qq"], ["install", "-y", "-qq", "openssh-server"]]) {
    const r = await run("apt-get", args);
    if (r.code !== 0) throw new Error(`apt-get ${args.join(" ")}: ${r.err}`);
  }
}

/** A running sshd. */
export interface Sshd {
  port: number;
  /** Holds the keys; removed by stop(). */
  dir: string;
  /** ssh options (key, no known_hosts, batch mode, port): `ssh ...options root@127.0.0.1 cmd`. */
  options: string[];
  stop(): Promise<void>;
}

/**
 * Starts sshd on a free port of `hostname` (default loopback; the WAN bench
 * passes its namespace's address); ready when sshd says it listens.
 */
export async function startSshd(opts: { hostname?: string } = {}): Promise<Sshd> {
  const hostname = opts.hostname ?? "127.0.0.1";
  await ensureOpenSsh();
  const dir = await Deno.makeTempDir({ prefix: "fv-sshd-" });
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/user_key`]);
  await Deno.copyFile(`${dir}/user_key.pub`, `${dir}/authorized_keys`);
  await Deno.chmod(dir, 0o700);
  await Deno.mkdir("/run/sshd", { recursive: true });
  const probe = Deno.listen({ hostname, port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await Deno.writeTextFile(
    `${dir}/sshd_config`,
    [
      `Port ${port}`,
      `ListenAddress ${hostname}`,
      `HostKey ${dir}/host_key`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      `PidFile ${dir}/sshd.pid`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
      "UseDNS no",
      "AllowTcpForwarding yes",
    ].join("\n") + "\n",
  );
  const child = new Deno.Command("/usr/sbin/sshd", {
    args: ["-D", "-e", "-f", `${dir}/sshd_config`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let log = "";
  while (!log.includes("Server listening")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`sshd exited: ${log}`);
    log += value;
  }
  const drain = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe flowing */ }
  })();
  return {
    port,
    dir,
    options: [
      "-F",
      "/dev/null",
      "-p",
      String(port),
      "-i",
      `${dir}/user_key`,
      "-o",
      "StrictHostKeyChecking=no",
      "-o",
      "UserKnownHostsFile=/dev/null",
      "-o",
      "BatchMode=yes",
      "-o",
      "LogLevel=ERROR",
    ],
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drain.catch(() => {});
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}
