import { isIP } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A parsed ezipc address. */
export type Address =
  | { readonly kind: "tcp" | "tls"; readonly host: string; readonly port: number }
  | { readonly kind: "unix"; readonly path: string }
  | { readonly kind: "pipe"; readonly name: string; readonly path: string };

// sun_path is 108 bytes on Linux and 104 on macOS/BSD, including the terminating NUL.
const MAX_UNIX_PATH = process.platform === "linux" ? 107 : 103;

/**
 * Parses `tcp://host:port`, `tls://host:port`, `unix:/absolute/path` or `pipe:name`.
 * Throws `TypeError` naming the expected forms for anything else.
 *
 * @example
 * parseAddress("tcp://127.0.0.1:0") // { kind: "tcp", host: "127.0.0.1", port: 0 }
 */
export function parseAddress(address: string): Address {
  if (typeof address !== "string") {
    throw new TypeError(`Address must be a string, got ${typeof address}`);
  }
  if (address.startsWith("unix:")) {
    let path = address.slice("unix:".length);
    if (path.startsWith("//")) path = path.slice(2); // unix:///abs/path
    if (!path.startsWith("/")) {
      throw new TypeError(
        `Unix socket address needs an absolute path: "unix:/path/to.sock", got "${address}"`,
      );
    }
    if (path.includes("\0"))
      throw new TypeError(
        "Unix socket path must not contain NUL (abstract sockets are not supported)",
      );
    checkUnixPathLength(path);
    return { kind: "unix", path };
  }
  if (address.startsWith("pipe:")) {
    const name = address.slice("pipe:".length).replace(/^\/\//, "");
    if (!/^[A-Za-z0-9._-]+$/.test(name)) {
      throw new TypeError(
        `Pipe name may hold letters, digits, ".", "_" and "-" only, got "${name}"`,
      );
    }
    const path =
      process.platform === "win32"
        ? `\\\\.\\pipe\\${name}`
        : join(process.env.XDG_RUNTIME_DIR || tmpdir(), `${name}.sock`);
    if (process.platform !== "win32") checkUnixPathLength(path);
    return { kind: "pipe", name, path };
  }
  const match = /^(tcp|tls):\/\/(\[[^\]]+\]|[^:/[\]]+):(\d{1,5})\/?$/.exec(address);
  if (match) {
    const port = Number(match[3]);
    if (port > 65535) throw new TypeError(`Port out of range in "${address}"`);
    const bracketed = match[2]!.startsWith("[");
    const host = bracketed ? match[2]!.slice(1, -1) : match[2]!;
    // Brackets hold an IPv6 address only; otherwise a DNS name or an IPv4 address.
    const valid = bracketed ? isIP(host) === 6 : isIP(host) === 4 || HOSTNAME.test(host);
    if (!valid) {
      throw new TypeError(
        `Invalid host "${match[2]}" in "${address}": use a host name, an IPv4 address, or an IPv6 address in brackets`,
      );
    }
    return { kind: match[1] as "tcp" | "tls", host, port };
  }
  throw new TypeError(
    `Unsupported address "${address}": use tcp://host:port, tls://host:port, unix:/absolute/path or pipe:name`,
  );
}

const HOSTNAME =
  /^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})?)*\.?$/;

function checkUnixPathLength(path: string): void {
  const bytes = Buffer.byteLength(path);
  if (bytes > MAX_UNIX_PATH) {
    throw new RangeError(
      `Unix socket path is ${bytes} bytes; this OS allows at most ${MAX_UNIX_PATH}: use a shorter path (${path})`,
    );
  }
}

/** Formats an address back to its string form (IPv6 hosts in brackets). */
export function formatAddress(address: Address): string {
  switch (address.kind) {
    case "unix":
      return `unix:${address.path}`;
    case "pipe":
      return `pipe:${address.name}`;
    default:
      return `${address.kind}://${isIP(address.host) === 6 ? `[${address.host}]` : address.host}:${address.port}`;
  }
}

/** Whether a host is a loopback address (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const v4 = h.startsWith("::ffff:") ? h.slice(7) : h;
  return isIP(v4) === 4 && v4.startsWith("127.");
}
