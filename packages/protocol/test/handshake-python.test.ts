// Interop with CPython's own `multiprocessing.connection`: the handshake must let
// `Client(address, authkey=key)` and `Listener(address, authkey=key)` in, byte for byte,
// over a Unix socket and over TCP, and leave the connection usable for frames after it.
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import net from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AuthenticationError } from "@ezipc/contract";
import { afterEach, describe, expect, it } from "vitest";
import {
  acceptHandshake,
  connectHandshake,
  type DigestName,
  type HandshakeChannel,
  type HandshakeOptions,
  normalizeAuthKey,
} from "../src/handshake.js";
import { nodeHandshakeCrypto } from "../src/node/handshake-crypto.js";

const FIXTURES = fileURLToPath(new URL("./fixtures/", import.meta.url));
// Non-ASCII on purpose: both sides must agree that a string key means its UTF-8 bytes.
const KEY = "pässwörd-🔑";
// Every child ends itself after this long (fixture watchdog) and is killed by us after
// a little more, so a hung handshake cannot leave a process behind.
const CHILD_LIFETIME_S = 15;

// ---------------------------------------------------------------------------------------
// Finding interpreters, at test time.

interface Python {
  path: string;
  minor: number;
}

function probe(path: string | undefined): Python | undefined {
  if (path === undefined) return undefined;
  try {
    const out = execFileSync(
      path,
      ["-c", "import sys; print(sys.executable); print(sys.version_info[1])"],
      { encoding: "utf8", timeout: 10_000, stdio: ["ignore", "pipe", "ignore"] },
    );
    const [executable, minor] = out.trim().split("\n");
    // The real executable, not a pyenv shim, so that killing the child kills Python.
    return executable && minor ? { path: executable, minor: Number(minor) } : undefined;
  } catch {
    return undefined;
  }
}

function pyenvPython(minor: number): string | undefined {
  let root: string;
  try {
    root = execFileSync("pyenv", ["root"], { encoding: "utf8", timeout: 10_000 }).trim();
  } catch {
    root = process.env.PYENV_ROOT ?? join(homedir(), ".pyenv");
  }
  const versions = join(root, "versions");
  if (!existsSync(versions)) return undefined;
  const pattern = new RegExp(`^3\\.${minor}\\.(\\d+)$`);
  const newestFirst = readdirSync(versions)
    .filter((name) => pattern.test(name))
    .sort((a, b) => Number(pattern.exec(b)![1]) - Number(pattern.exec(a)![1]));
  for (const name of newestFirst) {
    const bin = join(versions, name, "bin", "python3");
    if (existsSync(bin)) return bin;
  }
  return undefined;
}

// `python3` on PATH is the legacy interpreter here (3.11, HMAC-MD5 only); where it is
// newer, a pyenv 3.11 stands in.
const onPath = probe("python3");
const legacyPython = onPath && onPath.minor <= 11 ? onPath : probe(pyenvPython(11));
const modernPythons = [12, 13].map((minor) => ({
  minor,
  python: onPath?.minor === minor ? onPath : probe(pyenvPython(minor)),
}));

// ---------------------------------------------------------------------------------------
// Resources, all released after each test.

const cleanups: (() => unknown)[] = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A Python fixture as a child process whose stdout lines a test can await. */
class PythonProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  #stdout = "";
  #stderr = "";
  #waiters: { prefix: string; resolve(line: string): void; reject(error: Error): void }[] = [];
  readonly #child: ChildProcess;

  constructor(python: Python, fixture: string, address: string, key: string) {
    this.#child = spawn(python.path, [join(FIXTURES, fixture), address], {
      env: {
        ...process.env,
        EZIPC_AUTHKEY: key,
        EZIPC_FIXTURE_TIMEOUT: String(CHILD_LIFETIME_S),
        PYTHONDONTWRITEBYTECODE: "1",
      },
      stdio: ["ignore", "pipe", "pipe"],
      timeout: (CHILD_LIFETIME_S + 5) * 1000,
      killSignal: "SIGKILL",
    });
    this.#child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stdout += chunk;
      let newline = this.#stdout.indexOf("\n");
      while (newline !== -1) {
        this.#line(this.#stdout.slice(0, newline));
        this.#stdout = this.#stdout.slice(newline + 1);
        newline = this.#stdout.indexOf("\n");
      }
    });
    this.#child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      this.#stderr += chunk;
    });
    this.exited = new Promise((resolve) => {
      this.#child.on("close", (code) => {
        for (const waiter of this.#waiters.splice(0)) {
          waiter.reject(
            new Error(
              `${fixture} exited (${code}) before printing "${waiter.prefix}…"; ` +
                `stdout: ${JSON.stringify(this.lines)}; stderr: ${this.#stderr}`,
            ),
          );
        }
        resolve(code);
      });
    });
    cleanups.push(async () => {
      if (this.#child.exitCode === null && this.#child.signalCode === null) {
        this.#child.kill("SIGKILL");
      }
      await this.exited;
    });
  }

  /** The first line (already printed or still to come) that starts with `prefix`. */
  line(prefix: string): Promise<string> {
    const seen = this.lines.find((line) => line.startsWith(prefix));
    if (seen !== undefined) return Promise.resolve(seen);
    if (this.#child.exitCode !== null || this.#child.signalCode !== null) {
      return Promise.reject(new Error(`exited before printing "${prefix}…": ${this.#stderr}`));
    }
    return new Promise((resolve, reject) => this.#waiters.push({ prefix, resolve, reject }));
  }

  /** `promise`, unless the child exits first: then a rejection saying what it printed. */
  async unlessExited<T>(promise: Promise<T>): Promise<T> {
    const exit = this.exited.then((code): never => {
      throw new Error(`python exited (${code}) early; stdout: ${this.lines}; ${this.#stderr}`);
    });
    return Promise.race([promise, exit]);
  }

  #line(line: string): void {
    this.lines.push(line);
    const matched = this.#waiters.filter((waiter) => line.startsWith(waiter.prefix));
    this.#waiters = this.#waiters.filter((waiter) => !matched.includes(waiter));
    for (const waiter of matched) waiter.resolve(line);
  }
}

/** A tiny frame reader/writer over a socket: 4-byte big-endian length + payload. */
class SocketChannel implements HandshakeChannel {
  #buffered = Buffer.alloc(0);
  #closed: Error | undefined;
  #waiter:
    | { max: number; resolve(frame: Uint8Array): void; reject(error: Error): void }
    | undefined;

  constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk: Buffer) => {
      this.#buffered = Buffer.concat([this.#buffered, chunk]);
      this.#pump();
    });
    socket.on("error", (error) => {
      this.#closed ??= error;
    });
    socket.on("close", () => {
      this.#closed ??= new Error("socket closed");
      this.#pump();
    });
  }

  send(frame: Uint8Array): void {
    if (this.socket.destroyed) throw new Error("socket closed");
    const header = Buffer.alloc(4);
    header.writeUInt32BE(frame.length);
    this.socket.write(Buffer.concat([header, frame]));
  }

  receive(maxBytes: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.#waiter = { max: maxBytes, resolve, reject };
      this.#pump();
    });
  }

  #pump(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    if (this.#buffered.length >= 4) {
      const size = this.#buffered.readUInt32BE(0);
      // Refused on the header alone: the body is never waited for nor buffered.
      if (size > waiter.max) {
        this.#waiter = undefined;
        waiter.reject(new Error(`frame of ${size} bytes exceeds the limit of ${waiter.max}`));
        return;
      }
      if (this.#buffered.length >= 4 + size) {
        this.#waiter = undefined;
        const frame = new Uint8Array(this.#buffered.subarray(4, 4 + size));
        this.#buffered = this.#buffered.subarray(4 + size);
        waiter.resolve(frame);
        return;
      }
    }
    if (this.#closed) {
      this.#waiter = undefined;
      waiter.reject(this.#closed);
    }
  }
}

type Transport = "unix" | "tcp";

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "ezipc-hs-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function track(socket: net.Socket): net.Socket {
  cleanups.push(() => socket.destroy());
  return socket;
}

/** A Node listener on a fresh Unix socket or 127.0.0.1 port 0, and its first connection. */
async function listen(transport: Transport) {
  const server = net.createServer();
  const accepted = new Promise<net.Socket>((resolve) => {
    server.once("connection", (socket) => resolve(track(socket)));
  });
  const path = transport === "unix" ? join(tempDir(), "ezipc.sock") : undefined;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if (path) server.listen(path, resolve);
    else server.listen(0, "127.0.0.1", resolve);
  });
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  const address = path
    ? `unix:${path}`
    : `tcp:127.0.0.1:${(server.address() as net.AddressInfo).port}`;
  return { address, accepted };
}

/** Connects to a `unix:` or `tcp:` address as the fixtures print it. */
async function connectTo(address: string): Promise<net.Socket> {
  const tcp = /^tcp:(.+):(\d+)$/.exec(address);
  const socket = track(
    tcp
      ? net.connect({ host: tcp[1]!, port: Number(tcp[2]) })
      : net.connect({ path: address.slice("unix:".length) }),
  );
  await new Promise<void>((resolve, reject) => {
    socket.once("connect", resolve);
    socket.once("error", reject);
  });
  return socket;
}

function handshakeOptions(extra: Partial<HandshakeOptions> = {}): HandshakeOptions {
  return { key: normalizeAuthKey(KEY), crypto: nodeHandshakeCrypto, ...extra };
}

/** Starts Python's Client against a Node listener; resolves once it has connected. */
async function pythonClient(python: Python, transport: Transport, key = KEY) {
  const { address, accepted } = await listen(transport);
  const py = new PythonProcess(python, "py_handshake_client.py", address, key);
  const socket = await py.unlessExited(accepted);
  return { py, socket, channel: new SocketChannel(socket) };
}

/** Starts Python's Listener and connects to it. */
async function pythonListener(python: Python, transport: Transport, key = KEY) {
  const bind = transport === "unix" ? `unix:${join(tempDir(), "py.sock")}` : "tcp:127.0.0.1:0";
  const py = new PythonProcess(python, "py_handshake_listener.py", bind, key);
  const address = (await py.line("listening ")).slice("listening ".length);
  if (transport === "tcp") expect(address).toMatch(/^tcp:127\.0\.0\.1:[1-9]\d*$/);
  const socket = await connectTo(address);
  return { py, socket, channel: new SocketChannel(socket) };
}

/** After the handshake: Python sends first, we reply, Python prints what it got. */
async function exchangeFrames(py: PythonProcess, channel: SocketChannel): Promise<void> {
  await py.line("authenticated");
  const received = await py.unlessExited(channel.receive(1024));
  expect(Buffer.from(received).toString("utf8")).toBe("hello from python");
  channel.send(Buffer.from("hello from node"));
  expect(await py.line("received ")).toBe("received hello from node");
  expect(await py.exited).toBe(0);
}

const TRANSPORTS: Transport[] = ["unix", "tcp"];

// ---------------------------------------------------------------------------------------

describe(`legacy CPython (3.${legacyPython?.minor ?? "11"}, HMAC-MD5 only)`, () => {
  const python = legacyPython!;
  // Skipped only when no Python ≤ 3.11 is installed: this proof needs the real CPython.
  const skip = legacyPython === undefined;

  it.skipIf(skip).each(TRANSPORTS)(
    "accepts Client(address, authkey=key) over %s with allowLegacyDigest",
    async (transport) => {
      const { py, channel } = await pythonClient(python, transport);
      const result = await acceptHandshake(channel, handshakeOptions({ allowLegacyDigest: true }));
      expect(result).toEqual({ peerDigest: "md5-legacy" });
      await exchangeFrames(py, channel);
    },
  );

  it.skipIf(skip).each(TRANSPORTS)(
    "connects to Listener(address, authkey=key) over %s with allowLegacyDigest",
    async (transport) => {
      const { py, channel } = await pythonListener(python, transport);
      const result = await connectHandshake(channel, handshakeOptions({ allowLegacyDigest: true }));
      expect(result).toEqual({ peerDigest: "md5-legacy" });
      await exchangeFrames(py, channel);
    },
  );

  it.skipIf(skip)("refuses its Client without allowLegacyDigest, clearly", async () => {
    const { py, socket, channel } = await pythonClient(python, "unix");
    const error = await acceptHandshake(channel, handshakeOptions()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toBe(
      "authentication failed: the peer answered with the legacy MD5 digest (Python ≤ 3.11" +
        " multiprocessing); set allowLegacyDigest: true to accept it",
    );
    socket.end();
    // It got our #FAILURE#.
    expect(await py.line("auth-failed")).toBe(
      "auth-failed AuthenticationError: digest sent was rejected",
    );
    expect(await py.exited).toBe(2);
  });

  it.skipIf(skip)("refuses its Listener without allowLegacyDigest, clearly", async () => {
    const { py, socket, channel } = await pythonListener(python, "unix");
    const error = await connectHandshake(channel, handshakeOptions()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    expect((error as Error).message).toBe(
      "authentication failed: the peer uses the legacy MD5 digest (Python ≤ 3.11" +
        " multiprocessing); set allowLegacyDigest: true to accept it",
    );
    socket.destroy();
    expect(await py.line("auth-failed")).toMatch(/^auth-failed EOFError/);
    expect(await py.exited).toBe(2);
  });

  it.skipIf(skip)("refuses a wrong key even with allowLegacyDigest", async () => {
    const { py, socket, channel } = await pythonClient(python, "tcp", "not the key");
    await expect(
      acceptHandshake(channel, handshakeOptions({ allowLegacyDigest: true })),
    ).rejects.toThrow(/the peer's key does not match/);
    socket.end();
    expect(await py.line("auth-failed")).toBe(
      "auth-failed AuthenticationError: digest sent was rejected",
    );
  });
});

for (const { minor, python } of modernPythons) {
  describe(`CPython 3.${minor} ({digest}-prefixed protocol)`, () => {
    const py3 = python!;
    // Skipped only when this version is not installed: the proof needs the real CPython.
    const skip = python === undefined;

    it.skipIf(skip).each(TRANSPORTS)(
      "accepts Client(address, authkey=key) over %s with sha256",
      async (transport) => {
        const { py, channel } = await pythonClient(py3, transport);
        expect(await acceptHandshake(channel, handshakeOptions())).toEqual({
          peerDigest: "sha256",
        });
        await exchangeFrames(py, channel);
      },
    );

    it.skipIf(skip).each(TRANSPORTS)(
      "connects to Listener(address, authkey=key) over %s with sha256",
      async (transport) => {
        const { py, channel } = await pythonListener(py3, transport);
        expect(await connectHandshake(channel, handshakeOptions())).toEqual({
          peerDigest: "sha256",
        });
        await exchangeFrames(py, channel);
      },
    );

    it.skipIf(skip).each(["md5", "sha384", "sha3_256", "sha3_384"] satisfies DigestName[])(
      "gets an answer in the digest we challenge with: %s",
      async (digest) => {
        const { py, channel } = await pythonClient(py3, "unix");
        expect(await acceptHandshake(channel, handshakeOptions({ digest }))).toEqual({
          peerDigest: digest,
        });
        await exchangeFrames(py, channel);
      },
    );

    it.skipIf(skip)("is not downgraded to MD5 by allowLegacyDigest", async () => {
      const { py, channel } = await pythonListener(py3, "tcp");
      const options = handshakeOptions({ allowLegacyDigest: true });
      expect(await connectHandshake(channel, options)).toEqual({ peerDigest: "sha256" });
      await exchangeFrames(py, channel);
    });

    it.skipIf(skip)("fails on both sides when its Client has the wrong key", async () => {
      const { py, socket, channel } = await pythonClient(py3, "unix", "not the key");
      await expect(acceptHandshake(channel, handshakeOptions())).rejects.toSatisfy(
        (error: Error) =>
          error instanceof AuthenticationError &&
          error.message === "authentication failed: the peer's key does not match",
      );
      socket.end();
      expect(await py.line("auth-failed")).toBe(
        "auth-failed AuthenticationError: digest sent was rejected",
      );
      expect(await py.exited).toBe(2);
    });

    it.skipIf(skip)("fails on both sides when its Listener has the wrong key", async () => {
      const { py, socket, channel } = await pythonListener(py3, "unix", "not the key");
      await expect(connectHandshake(channel, handshakeOptions())).rejects.toThrow(
        /the peer rejected our answer/,
      );
      socket.destroy();
      expect(await py.line("auth-failed")).toBe(
        "auth-failed AuthenticationError: digest received was wrong",
      );
      expect(await py.exited).toBe(2);
    });
  });
}
