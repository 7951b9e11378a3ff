import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { formatAddress, isLoopbackHost, parseAddress } from "./address.js";

// sun_path holds 108 bytes on Linux and 104 on macOS/BSD, the terminating NUL included.
const MAX_UNIX_PATH = process.platform === "linux" ? 107 : 103;

/** An absolute path of exactly `bytes` bytes. */
function pathOfBytes(bytes: number): string {
  const dir = "/tmp/";
  return dir + "s".repeat(bytes - dir.length);
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe("parseAddress", () => {
  it.each([
    ["tcp://127.0.0.1:0", { kind: "tcp", host: "127.0.0.1", port: 0 }],
    ["tcp://localhost:8080", { kind: "tcp", host: "localhost", port: 8080 }],
    ["tcp://example.com:65535", { kind: "tcp", host: "example.com", port: 65535 }],
    ["tcp://10.0.0.1:1/", { kind: "tcp", host: "10.0.0.1", port: 1 }],
    ["tls://example.com:443", { kind: "tls", host: "example.com", port: 443 }],
    ["tcp://[::1]:9000", { kind: "tcp", host: "::1", port: 9000 }],
    ["tls://[2001:db8::7]:8443", { kind: "tls", host: "2001:db8::7", port: 8443 }],
    ["tcp://[::ffff:127.0.0.1]:80", { kind: "tcp", host: "::ffff:127.0.0.1", port: 80 }],
    ["unix:/run/app.sock", { kind: "unix", path: "/run/app.sock" }],
    ["unix:///run/app.sock", { kind: "unix", path: "/run/app.sock" }],
  ])("parses %s", (address, expected) => {
    expect(parseAddress(address)).toEqual(expected);
  });

  it("parses pipe:name to a socket in the runtime directory on POSIX", () => {
    vi.stubEnv("XDG_RUNTIME_DIR", "/run/user/1000");
    const expected =
      process.platform === "win32" ? "\\\\.\\pipe\\my-app.v1_x" : "/run/user/1000/my-app.v1_x.sock";
    expect(parseAddress("pipe:my-app.v1_x")).toEqual({
      kind: "pipe",
      name: "my-app.v1_x",
      path: expected,
    });
    expect(parseAddress("pipe://my-app.v1_x")).toMatchObject({ kind: "pipe", name: "my-app.v1_x" });
  });

  it.runIf(process.platform !== "win32")(
    "puts pipe sockets in the temp directory without XDG_RUNTIME_DIR",
    () => {
      vi.stubEnv("XDG_RUNTIME_DIR", "");
      expect(parseAddress("pipe:app")).toMatchObject({ path: join(tmpdir(), "app.sock") });
    },
  );

  it.each(["unix:relative/app.sock", "unix:./app.sock", "unix:", "unix://tmp/app.sock"])(
    "refuses the relative Unix path %j with a TypeError asking for an absolute path",
    (address) => {
      expect(() => parseAddress(address)).toThrow(TypeError);
      expect(() => parseAddress(address)).toThrow(/absolute path/);
    },
  );

  it("refuses a Unix path holding NUL (abstract sockets) with a TypeError", () => {
    expect(() => parseAddress("unix:/tmp/a\0b.sock")).toThrow(TypeError);
    expect(() => parseAddress("unix:/tmp/a\0b.sock")).toThrow(/NUL/);
    expect(() => parseAddress("unix:\0abstract")).toThrow(TypeError);
  });

  it("accepts a Unix path of the longest length the OS allows", () => {
    const path = pathOfBytes(MAX_UNIX_PATH);
    expect(parseAddress(`unix:${path}`)).toEqual({ kind: "unix", path });
  });

  it("refuses a Unix path one byte too long with a RangeError naming the limit", () => {
    const path = pathOfBytes(MAX_UNIX_PATH + 1);
    expect(() => parseAddress(`unix:${path}`)).toThrow(RangeError);
    expect(() => parseAddress(`unix:${path}`)).toThrow(new RegExp(`at most ${MAX_UNIX_PATH}`));
  });

  it("counts the length of a Unix path in bytes, not characters", () => {
    // 60 two-byte characters: 61 characters, 121 bytes.
    const path = `/${"é".repeat(60)}`;
    expect(path.length).toBeLessThanOrEqual(MAX_UNIX_PATH);
    expect(() => parseAddress(`unix:${path}`)).toThrow(RangeError);
  });

  it.runIf(process.platform !== "win32")(
    "refuses a pipe name whose socket path is too long",
    () => {
      vi.stubEnv("XDG_RUNTIME_DIR", "/run/user/1000");
      expect(() => parseAddress(`pipe:${"n".repeat(MAX_UNIX_PATH)}`)).toThrow(RangeError);
    },
  );

  it.each(["pipe:", "pipe:../escape", "pipe:a/b", "pipe:with space", "pipe:a\\b"])(
    "refuses the pipe name in %j with a TypeError",
    (address) => {
      expect(() => parseAddress(address)).toThrow(TypeError);
    },
  );

  it.each(["tcp://localhost:65536", "tcp://localhost:99999", "tls://[::1]:70000"])(
    "refuses the out-of-range port in %s with a TypeError",
    (address) => {
      expect(() => parseAddress(address)).toThrow(TypeError);
      expect(() => parseAddress(address)).toThrow(/[Pp]ort out of range/);
    },
  );

  it.each([
    "",
    "localhost:80",
    "http://localhost:80",
    "udp://localhost:53",
    "tcp:/localhost:80",
    "tcp://localhost",
    "tcp://localhost:",
    "tcp://localhost:-1",
    "tcp://localhost:123456",
    "tcp://localhost:80/path",
    "tcp://:80",
    "tcp://::1:80",
    "tcp://[::1:80",
    "tcp://[]:80",
    "/tmp/app.sock",
  ])("refuses %j with a TypeError naming the supported forms", (address) => {
    expect(() => parseAddress(address)).toThrow(TypeError);
    expect(() => parseAddress(address)).toThrow(/tcp:\/\/host:port.*unix:\/absolute\/path/);
  });

  it.each([
    "tcp://[localhost]:80",
    "tcp://[127.0.0.1]:80",
    "tcp://local host:80",
    "tcp://user@host:80",
  ])(
    "refuses %j, whose host is neither a hostname nor an IP address, with a TypeError",
    (address) => {
      expect(() => parseAddress(address)).toThrow(TypeError);
    },
  );

  it("refuses a value that is not a string with a TypeError", () => {
    expect(() => parseAddress(8080 as unknown as string)).toThrow(TypeError);
  });
});

describe("formatAddress", () => {
  it.each([
    ["tcp://127.0.0.1:0", "tcp://127.0.0.1:0"],
    ["tls://example.com:443", "tls://example.com:443"],
    ["tcp://[::1]:9000", "tcp://[::1]:9000"],
    ["tcp://localhost:80/", "tcp://localhost:80"],
    ["unix:/run/app.sock", "unix:/run/app.sock"],
    ["unix:///run/app.sock", "unix:/run/app.sock"],
    ["pipe://app", "pipe:app"],
  ])("formats %s as %s, which parses back to the same address", (address, formatted) => {
    const parsed = parseAddress(address);
    expect(formatAddress(parsed)).toBe(formatted);
    expect(parseAddress(formatted)).toEqual(parsed);
  });
});

describe("isLoopbackHost", () => {
  it.each([
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.254",
    "localhost",
    "LocalHost",
    "::1",
    "0:0:0:0:0:0:0:1",
    "::ffff:127.0.0.1",
  ])("treats %s as loopback", (host) => {
    expect(isLoopbackHost(host)).toBe(true);
  });

  it.each([
    "0.0.0.0",
    "::",
    "10.0.0.1",
    "192.168.1.10",
    "128.0.0.1",
    "::2",
    "::ffff:10.0.0.1",
    "example.com",
    "localhost.example.com",
    "127.0.0.1.example.com",
    "127.example.com",
    "",
  ])("treats %j as not loopback", (host) => {
    expect(isLoopbackHost(host)).toBe(false);
  });
});
