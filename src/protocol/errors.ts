import { VaultError } from "../errors/mod.ts";

/** A peer sent something that breaks the wire protocol. Codes start with `protocol.`. */
export class ProtocolError extends VaultError {
  override name = "ProtocolError";
  constructor(code: string, message: string) {
    super(
      `protocol.${code}`,
      message,
      "client and server may be different versions; update both, or report a bug",
    );
  }
}
