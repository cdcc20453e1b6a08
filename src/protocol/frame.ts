/**
 * Frame codec for framed streams.
 *
 * A frame is `u32 big-endian length` + `u8 kind` + payload, where length
 * counts the kind byte and the payload. Kind 0 carries one JSON message
 * (validated by the caller's zod schema); kinds 1–3 carry raw bytes of a
 * data channel (stdin, stdout, stderr), so console and exec output never pay
 * for base64. The length is checked against a maximum *before* anything is
 * allocated: a hostile length is a protocol error, not an allocation.
 *
 * @module
 */
import type { z } from "zod";
import { ProtocolError } from "./errors.ts";

/** The shape every QUIC bidirectional stream (and a TCP-like test double) has. */
export interface ByteStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
}

/** Frame kinds. */
export const FrameKind = { message: 0, stdin: 1, stdout: 2, stderr: 3 } as const;

/** A data channel number. */
export type Channel = 1 | 2 | 3;

/** One decoded frame. */
export type Frame =
  | { kind: "message"; message: unknown }
  | { kind: "data"; channel: Channel; bytes: Uint8Array };

/** Default bound on one frame: generous for messages, and data is chunked below it. */
export const MAX_FRAME = 1 << 20;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

function header(length: number, kind: number, into: Uint8Array): void {
  new DataView(into.buffer, into.byteOffset, 5).setUint32(0, length);
  into[4] = kind;
}

/** Encodes one JSON message frame. */
export function encodeMessage(message: unknown): Uint8Array {
  const json = encoder.encode(JSON.stringify(message));
  const out = new Uint8Array(5 + json.length);
  header(json.length + 1, FrameKind.message, out);
  out.set(json, 5);
  return out;
}

/** Encodes one data frame for `channel`. */
export function encodeData(channel: Channel, bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + bytes.length);
  header(bytes.length + 1, channel, out);
  out.set(bytes, 5);
  return out;
}

/**
 * Reads frames from a byte stream. After a header frame a stream may switch
 * to raw bytes: {@link FrameReader.raw} hands back what was read ahead plus
 * the rest of the stream, untouched.
 */
export class FrameReader {
  #source: ReadableStream<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #done = false;
  readonly maxFrame: number;

  constructor(readable: ReadableStream<Uint8Array>, maxFrame = MAX_FRAME) {
    this.#source = readable;
    this.#reader = readable.getReader();
    this.maxFrame = maxFrame;
  }

  /** Pulls one more chunk; false at end of stream. */
  async #fill(): Promise<boolean> {
    if (this.#done) return false;
    const { value, done } = await this.#reader.read();
    if (done) {
      this.#done = true;
      return false;
    }
    if (value.length > 0) {
      this.#chunks.push(value);
      this.#buffered += value.length;
    }
    return true;
  }

  /** Removes exactly `n` buffered bytes (n ≤ buffered) and returns them. */
  #take(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first.length === n) {
      this.#chunks.shift();
      this.#buffered -= n;
      return first;
    }
    if (first.length > n) {
      this.#chunks[0] = first.subarray(n);
      this.#buffered -= n;
      return first.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let off = 0;
    while (off < n) {
      const c = this.#chunks[0];
      const k = Math.min(c.length, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (k === c.length) this.#chunks.shift();
      else this.#chunks[0] = c.subarray(k);
    }
    this.#buffered -= n;
    return out;
  }

  /**
   * The next frame, or `null` at a clean end of stream (between frames).
   * Throws {@link ProtocolError} on a truncated frame, a bad length, an
   * unknown kind or a message that is not JSON.
   */
  async next(): Promise<Frame | null> {
    while (this.#buffered < 5) {
      if (!await this.#fill()) {
        if (this.#buffered === 0) return null;
        throw new ProtocolError("truncated", "stream ended inside a frame header");
      }
    }
    const head = this.#take(5);
    const length = new DataView(head.buffer, head.byteOffset, 5).getUint32(0);
    const kind = head[4];
    if (length < 1 || length > this.maxFrame + 1) {
      throw new ProtocolError(
        "frame_size",
        `frame of ${length} bytes is outside 1..${this.maxFrame + 1}`,
      );
    }
    if (kind > 3) throw new ProtocolError("frame_kind", `unknown frame kind ${kind}`);
    const size = length - 1;
    while (this.#buffered < size) {
      if (!await this.#fill()) {
        throw new ProtocolError("truncated", `stream ended inside a ${size}-byte frame`);
      }
    }
    const payload = size === 0 ? new Uint8Array(0) : this.#take(size);
    if (kind !== FrameKind.message) {
      return { kind: "data", channel: kind as Channel, bytes: payload };
    }
    let message: unknown;
    try {
      message = JSON.parse(decoder.decode(payload));
    } catch {
      throw new ProtocolError("bad_json", "message frame is not valid UTF-8 JSON");
    }
    return { kind: "message", message };
  }

  /** The next frame, which must be a message matching `schema`; end of stream is an error. */
  async message<S extends z.ZodType>(schema: S, what = "message"): Promise<z.infer<S>> {
    const frame = await this.next();
    if (frame === null) throw new ProtocolError("eof", `stream ended while waiting for ${what}`);
    if (frame.kind !== "message") {
      throw new ProtocolError("unexpected_data", `expected ${what}, got data`);
    }
    return parseMessage(schema, frame.message, what);
  }

  /** One raw byte (used for the stream tag), or null at end of stream. */
  async byte(): Promise<number | null> {
    while (this.#buffered < 1) {
      if (!await this.#fill()) return null;
    }
    return this.#take(1)[0];
  }

  /** Everything not yet read, as a plain byte stream. The reader must not be used after. */
  raw(): ReadableStream<Uint8Array> {
    const pending = this.#chunks.splice(0);
    this.#buffered = 0;
    const reader = this.#reader;
    const done = this.#done;
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        const next = pending.shift();
        if (next) return controller.enqueue(next);
        if (done) return controller.close();
        const r = await reader.read();
        if (r.done) controller.close();
        else controller.enqueue(r.value);
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
  }

  /**
   * Gives up the stream: the bytes read ahead, and the source stream itself,
   * unlocked and untouched beyond them. Unlike {@link FrameReader.raw} nothing
   * is wrapped, so a resource-backed stream stays one (Deno's `pipeTo` between
   * two of those copies natively, with no JS per chunk). The reader must not
   * be used after.
   */
  detach(): { head: Uint8Array[]; readable: ReadableStream<Uint8Array> } {
    const head = this.#chunks.splice(0);
    this.#buffered = 0;
    this.#reader.releaseLock();
    return { head, readable: this.#source };
  }

  /** Stops reading and tells the peer we will not read more. */
  async cancel(reason?: unknown): Promise<void> {
    await this.#reader.cancel(reason).catch(() => {});
  }
}

/** Validates `value` against `schema`, turning zod's failure into a {@link ProtocolError}. */
export function parseMessage<S extends z.ZodType>(
  schema: S,
  value: unknown,
  what = "message",
): z.infer<S> {
  const result = schema.safeParse(value);
  if (!result.success) {
    const issue = result.error.issues[0];
    const where = issue?.path.length ? ` at ${issue.path.join(".")}` : "";
    throw new ProtocolError("bad_message", `invalid ${what}${where}: ${issue?.message}`);
  }
  return result.data;
}

/** Writes frames to a byte stream. Writes are serialised by the underlying writer. */
export class FrameWriter {
  readonly writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(writable: WritableStream<Uint8Array>) {
    this.writer = writable.getWriter();
  }

  /** Sends one JSON message. */
  send(message: unknown): Promise<void> {
    return this.writer.write(encodeMessage(message));
  }

  /** Sends bytes on a data channel, split so no frame exceeds {@link MAX_FRAME}. */
  async data(channel: Channel, bytes: Uint8Array): Promise<void> {
    for (let off = 0; off < bytes.length; off += MAX_FRAME) {
      await this.writer.write(encodeData(channel, bytes.subarray(off, off + MAX_FRAME)));
    }
  }

  /** Sends raw bytes (after a header, on raw streams). */
  raw(bytes: Uint8Array): Promise<void> {
    return this.writer.write(bytes);
  }

  /** Half-closes our direction. Errors (peer gone) are swallowed: there is nobody to tell. */
  async close(): Promise<void> {
    await this.writer.close().catch(() => {});
  }

  /** Aborts our direction. */
  async abort(reason?: unknown): Promise<void> {
    await this.writer.abort(reason).catch(() => {});
  }

  /** Gives the writable back (for raw piping after the header). */
  release(): void {
    this.writer.releaseLock();
  }
}
