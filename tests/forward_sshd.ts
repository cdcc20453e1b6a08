/**
 * A throwaway sshd on a free loopback port (temp host key, one authorized
 * key), for the pipe test and the ssh baselines in bench/.
 *
 * @module
 */
export async function run(cmd: string, args: string[]) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: out.stdout, out: text(out.stdout), err: text(out.stderr) };
}

/** sshd on a free loopback port with a throwaway host key and one authorized key. */
export async function startSshd(dir: string) {
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/host_key`]);
  await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", `${dir}/user_key`]);
  await Deno.copyFile(`${dir}/user_key.pub`, `${dir}/authorized_keys`);
  await Deno.chmod(dir, 0o700);
  await Deno.mkdir("/run/sshd", { recursive: true });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await Deno.writeTextFile(
    `${dir}/sshd_config`,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${dir}/host_key`,
      `AuthorizedKeysFile ${dir}/authorized_keys`,
      `PidFile ${dir}/sshd.pid`,
      "PermitRootLogin prohibit-password",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      "StrictModes no",
    ].join("\n") + "\n",
  );
  const child = new Deno.Command("/usr/sbin/sshd", {
    args: ["-D", "-e", "-f", `${dir}/sshd_config`],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  // Ready when it says it is listening.
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
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await drain.catch(() => {});
    },
  };
}
