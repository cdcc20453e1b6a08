/**
 * TCP port forwards and `pipe`, both sides: the client's local listeners
 * and the init-side connector, one stream per TCP connection.
 *
 * @module
 */
export {
  type ForwardHandle,
  openForward,
  openForwardPipelined,
  type OpenStream,
  runPipe,
  serveForward,
  startForward,
} from "./forward.ts";
export { type ForwardSpec, parseForwardSpec, parseHostPort } from "./spec.ts";
export { tcpByteStream } from "./tcp.ts";
