import { AbortError, AuthenticationError } from "@ezipc/contract";

/**
 * An HMAC digest a challenge can ask for: the names Python's `multiprocessing.connection`
 * allows (`_ALLOWED_DIGESTS`), spelt as on the wire.
 */
export type DigestName = "md5" | "sha256" | "sha384" | "sha3_256" | "sha3_384";

/**
 * The digest a peer answered our challenge with: a `{name}`-prefixed HMAC, or
 * `"md5-legacy"` for the raw 16-byte HMAC-MD5 of Python ≤ 3.11.
 */
export type PeerDigest = DigestName | "md5-legacy";

/**
 * The frame I/O the handshake needs, over a connection that carries
 * length-prefixed frames (the transport adds and strips the 4-byte prefix).
 */
export interface HandshakeChannel {
  /** Queues one frame. Throws when the connection is closed. */
  send(frame: Uint8Array): void;
  /**
   * Resolves with the next whole frame's payload, as a copy the handshake may keep.
   * Rejects when the connection closes, and — without buffering the frame — when its
   * header announces more than `maxBytes`.
   */
  receive(maxBytes: number): Promise<Uint8Array>;
}

/**
 * The primitives the handshake needs, supplied by the runtime (see `nodeHandshakeCrypto`
 * in `@ezipc/protocol/node`), so that the core imports no crypto module.
 */
export interface HandshakeCrypto {
  /** HMAC of `data` under `key` with the named digest. */
  hmac(digest: DigestName, key: Uint8Array, data: Uint8Array): Uint8Array;
  /** `n` cryptographically secure random bytes. */
  randomBytes(n: number): Uint8Array;
  /** Compares in time independent of the contents; `false` when the lengths differ. */
  timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean;
}

/** Options of {@link acceptHandshake} and {@link connectHandshake}. */
export interface HandshakeOptions {
  /** The shared secret, as bytes (see {@link normalizeAuthKey}). Must not be empty. */
  key: Uint8Array;
  /** HMAC, random bytes and constant-time comparison for this runtime. */
  crypto: HandshakeCrypto;
  /**
   * Accept the legacy HMAC-MD5 protocol of Python ≤ 3.11's `multiprocessing`: a raw
   * 16-byte answer to our challenge, a 20-byte challenge from the peer, or a
   * `{md5}`-prefixed answer when we asked for something else.
   * @default false
   */
  allowLegacyDigest?: boolean;
  /**
   * The digest we challenge with. A peer may answer with any other allowed digest except
   * MD5 (as Python's own challenger accepts), and with MD5 only if this is `"md5"` or
   * `allowLegacyDigest` is on.
   * @default "sha256"
   */
  digest?: DigestName;
  /**
   * Deadline for the whole handshake, in milliseconds; `Infinity` disables it.
   * @default 5000
   */
  timeout?: number;
  /** Aborts the handshake; it then rejects with an `AbortError` whose `cause` is the reason. */
  signal?: AbortSignal;
}

/** What a successful handshake learnt about the peer. */
export interface HandshakeResult {
  /** The digest the peer answered our challenge with. */
  peerDigest: PeerDigest;
}

/** The largest handshake frame accepted, as Python's `recv_bytes(256)`: 256 bytes. */
export const HANDSHAKE_MAX_FRAME_BYTES = 256;

/** The default deadline of the whole handshake: 5000 ms. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 5000;

const CHALLENGE = ascii("#CHALLENGE#");
const WELCOME = ascii("#WELCOME#");
const FAILURE = ascii("#FAILURE#");
// Python 3.12+ sends 40 random bytes after the `{digest}` prefix (MESSAGE_LENGTH).
const CHALLENGE_RANDOM_BYTES = 40;
// Python ≤ 3.11 challenges with 20 unprefixed random bytes and answers with the raw
// 16-byte HMAC-MD5. No prefixed message is ever this short, which is how Python 3.12+
// tells the legacy protocol apart — by length alone — and so do we.
const LEGACY_CHALLENGE_BYTES = 20;
const LEGACY_ANSWER_BYTES = 16;
const DIGESTS: ReadonlySet<string> = new Set<DigestName>([
  "md5",
  "sha256",
  "sha384",
  "sha3_256",
  "sha3_384",
]);
// Python looks for the closing brace only within `_MAX_DIGEST_LEN + 2` bytes.
const MAX_DIGEST_NAME_BYTES = 8;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
// setTimeout fires at once for delays beyond a signed 32-bit millisecond count.
const MAX_TIMER_DELAY = 2 ** 31 - 1;

/**
 * Runs the listening side of the authentication handshake: challenges the peer, then
 * answers its challenge. Interoperates with Python's
 * `multiprocessing.connection.Client(address, authkey=key)`.
 *
 * Rejects with `AuthenticationError` on a wrong key, a malformed message, a closed
 * connection or the deadline, and with `AbortError` when `signal` aborts. After a
 * rejection the caller must close the connection.
 *
 * @example
 * const { peerDigest } = await acceptHandshake(channel, {
 *   key: normalizeAuthKey(authKey),
 *   crypto: nodeHandshakeCrypto,
 * });
 */
export async function acceptHandshake(
  channel: HandshakeChannel,
  options: HandshakeOptions,
): Promise<HandshakeResult> {
  return runHandshake(channel, options, async (session) => {
    const peerDigest = await session.challenge();
    await session.answer();
    return { peerDigest };
  });
}

/**
 * Runs the connecting side of the authentication handshake: answers the peer's
 * challenge, then challenges it. Interoperates with Python's
 * `multiprocessing.connection.Listener(address, authkey=key)`.
 *
 * Rejects as {@link acceptHandshake} does; after a rejection the caller must close the
 * connection.
 */
export async function connectHandshake(
  channel: HandshakeChannel,
  options: HandshakeOptions,
): Promise<HandshakeResult> {
  return runHandshake(channel, options, async (session) => {
    await session.answer();
    const peerDigest = await session.challenge();
    return { peerDigest };
  });
}

/**
 * Turns an `authKey` option into the key bytes: a string becomes its UTF-8 bytes (so
 * Python passes `key.encode()`), bytes are copied. Throws `TypeError` on an empty key or
 * a value of another type.
 *
 * @example
 * normalizeAuthKey(process.env.EZIPC_AUTHKEY ?? "") // throws when the variable is unset
 */
export function normalizeAuthKey(key: string | Uint8Array): Uint8Array {
  let bytes: Uint8Array;
  if (typeof key === "string") bytes = new TextEncoder().encode(key);
  // A copy, and a plain Uint8Array even from a Buffer (whose `slice` is a view).
  else if (key instanceof Uint8Array) bytes = new Uint8Array(key);
  else throw new TypeError(`authKey must be a string or a Uint8Array, got ${typeof key}`);
  // An empty key would let anyone with an empty key in: almost surely an unset variable.
  if (bytes.length === 0) throw new TypeError("authKey must not be empty");
  return bytes;
}

interface Settings {
  readonly key: Uint8Array;
  readonly crypto: HandshakeCrypto;
  readonly allowLegacyDigest: boolean;
  readonly digest: DigestName;
}

async function runHandshake(
  channel: HandshakeChannel,
  options: HandshakeOptions,
  steps: (session: Session) => Promise<HandshakeResult>,
): Promise<HandshakeResult> {
  const { key, crypto, signal, allowLegacyDigest = false, digest = "sha256" } = options;
  const timeout = options.timeout ?? DEFAULT_HANDSHAKE_TIMEOUT;
  if (!(key instanceof Uint8Array) || key.length === 0) {
    throw new TypeError("handshake key must be a non-empty Uint8Array (see normalizeAuthKey)");
  }
  if (!DIGESTS.has(digest)) throw new RangeError(`unsupported handshake digest ${String(digest)}`);
  if (typeof timeout !== "number" || !(timeout > 0)) {
    throw new RangeError(`handshake timeout must be a positive number of ms, got ${timeout}`);
  }
  if (signal?.aborted) throw abortError(signal);

  const session = new Session(channel, { key, crypto, allowLegacyDigest, digest });
  const timer =
    timeout <= MAX_TIMER_DELAY
      ? setTimeout(() => {
          session.stop(
            new AuthenticationError(
              `authentication failed: the handshake did not complete within ${timeout} ms`,
            ),
          );
        }, timeout)
      : undefined;
  const onAbort = () => session.stop(abortError(signal!));
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return await steps(session);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}

/** One handshake's state: the channel, the settings and how it was stopped, if it was. */
class Session {
  readonly #channel: HandshakeChannel;
  readonly #settings: Settings;
  readonly #stopped: Promise<never>;
  #stop!: (reason: Error) => void;
  #stopReason: Error | undefined;

  constructor(channel: HandshakeChannel, settings: Settings) {
    this.#channel = channel;
    this.#settings = settings;
    this.#stopped = new Promise<never>((_, reject) => {
      this.#stop = reject;
    });
    // Nobody may be waiting when the deadline passes; the next step sees the reason.
    this.#stopped.catch(() => {});
  }

  /** Ends the handshake at its next step (deadline or abort). */
  stop(reason: Error): void {
    if (this.#stopReason) return;
    this.#stopReason = reason;
    this.#stop(reason);
  }

  /** Sends our challenge, checks the answer, sends the verdict. */
  async challenge(): Promise<PeerDigest> {
    const { crypto, digest } = this.#settings;
    // The MAC covers all of M, `{digest}` prefix included, as in Python's deliver_challenge.
    const message = concat(ascii(`{${digest}}`), crypto.randomBytes(CHALLENGE_RANDOM_BYTES));
    this.#send(concat(CHALLENGE, message), "our challenge");
    const answer = await this.#receive("answer to our challenge");
    let peerDigest: PeerDigest;
    try {
      peerDigest = this.#verify(message, answer);
    } catch (error) {
      // Python's answerer waits for a verdict: tell it, so its error is "rejected".
      this.#trySend(FAILURE);
      throw error;
    }
    this.#send(WELCOME, "our welcome");
    return peerDigest;
  }

  /** Receives the peer's challenge, answers it, reads the verdict. */
  async answer(): Promise<void> {
    const { key, crypto, allowLegacyDigest } = this.#settings;
    const frame = await this.#receive("challenge");
    if (!startsWith(frame, CHALLENGE)) {
      throw new AuthenticationError(
        `authentication failed: expected the peer's #CHALLENGE#, got ${preview(frame)}` +
          " (is an authKey set on both sides?)",
      );
    }
    const message = frame.subarray(CHALLENGE.length);
    let response: Uint8Array;
    if (message.length < LEGACY_CHALLENGE_BYTES) {
      throw new AuthenticationError(
        `authentication failed: the peer's challenge is too short (${message.length} bytes)`,
      );
    } else if (message.length === LEGACY_CHALLENGE_BYTES) {
      if (!allowLegacyDigest) {
        throw new AuthenticationError(
          "authentication failed: the peer uses the legacy MD5 digest (Python ≤ 3.11" +
            " multiprocessing); set allowLegacyDigest: true to accept it",
        );
      }
      response = crypto.hmac("md5", key, message);
    } else {
      const name = digestPrefix(message);
      if (name === undefined) {
        throw new AuthenticationError(
          "authentication failed: the peer's challenge has no supported {digest} prefix" +
            ` (${preview(message)}); allowed: ${[...DIGESTS].join(", ")}`,
        );
      }
      response = concat(ascii(`{${name}}`), crypto.hmac(name, key, message));
    }
    this.#send(response, "our answer");
    const verdict = await this.#receive("verdict on our answer");
    if (equals(verdict, WELCOME)) return;
    if (equals(verdict, FAILURE)) {
      throw new AuthenticationError(
        "authentication failed: the peer rejected our answer (its key does not match ours)",
      );
    }
    throw new AuthenticationError(
      `authentication failed: expected #WELCOME# or #FAILURE#, got ${preview(verdict)}`,
    );
  }

  /** Checks the peer's answer to `message`; throws AuthenticationError when it is wrong. */
  #verify(message: Uint8Array, answer: Uint8Array): PeerDigest {
    const { key, crypto, allowLegacyDigest, digest } = this.#settings;
    let name: DigestName;
    let mac: Uint8Array;
    let peerDigest: PeerDigest;
    // Length first, as Python does: a raw MD5 answer could start with "{" by chance.
    if (answer.length === LEGACY_ANSWER_BYTES) {
      if (!allowLegacyDigest) {
        throw new AuthenticationError(
          "authentication failed: the peer answered with the legacy MD5 digest (Python ≤ 3.11" +
            " multiprocessing); set allowLegacyDigest: true to accept it",
        );
      }
      name = "md5";
      mac = answer;
      peerDigest = "md5-legacy";
    } else {
      const prefixed = digestPrefix(answer);
      if (prefixed === undefined) {
        throw new AuthenticationError(
          "authentication failed: the peer's answer is neither {digest}-prefixed nor a" +
            ` 16-byte legacy MD5 one (${answer.length} bytes: ${preview(answer)})`,
        );
      }
      // The peer holds the key, so its choice of digest is no downgrade attack; still,
      // MD5 is a policy the user opts into.
      if (prefixed === "md5" && digest !== "md5" && !allowLegacyDigest) {
        throw new AuthenticationError(
          `authentication failed: the peer answered our ${digest} challenge with the MD5` +
            " digest; set allowLegacyDigest: true to accept it",
        );
      }
      name = prefixed;
      mac = answer.subarray(prefixed.length + 2);
      peerDigest = prefixed;
    }
    const expected = crypto.hmac(name, key, message);
    if (mac.length !== expected.length) {
      throw new AuthenticationError(
        `authentication failed: the peer's ${name} answer is ${mac.length} bytes,` +
          ` expected ${expected.length}`,
      );
    }
    if (!crypto.timingSafeEqual(mac, expected)) {
      throw new AuthenticationError("authentication failed: the peer's key does not match");
    }
    return peerDigest;
  }

  async #receive(what: string): Promise<Uint8Array> {
    if (this.#stopReason) throw this.#stopReason;
    let frame: Uint8Array;
    try {
      frame = await Promise.race([this.#channel.receive(HANDSHAKE_MAX_FRAME_BYTES), this.#stopped]);
    } catch (error) {
      // The deadline's own error, or a channel that already explains itself.
      if (error === this.#stopReason || error instanceof AuthenticationError) throw error;
      throw new AuthenticationError(
        `authentication failed: no ${what} from the peer: ${describe(error)}`,
        { cause: error },
      );
    }
    // The channel should have refused it unbuffered; never process one that slipped by.
    if (frame.length > HANDSHAKE_MAX_FRAME_BYTES) {
      throw new AuthenticationError(
        `authentication failed: the peer's ${what} is ${frame.length} bytes, over the` +
          ` handshake limit of ${HANDSHAKE_MAX_FRAME_BYTES} bytes`,
      );
    }
    return frame;
  }

  #send(frame: Uint8Array, what: string): void {
    if (this.#stopReason) throw this.#stopReason;
    try {
      this.#channel.send(frame);
    } catch (error) {
      throw new AuthenticationError(
        `authentication failed: could not send ${what}: ${describe(error)}`,
        { cause: error },
      );
    }
  }

  #trySend(frame: Uint8Array): void {
    try {
      this.#channel.send(frame);
    } catch {
      // Already failing; the original error says more than a closed connection.
    }
  }
}

/**
 * The digest named by a `{name}` prefix, by Python's rules (`_get_digest_name_and_payload`):
 * the brace must close within the longest allowed name, and the name must be allowed.
 */
function digestPrefix(message: Uint8Array): DigestName | undefined {
  if (message[0] !== OPEN_BRACE) return undefined;
  const end = message.subarray(1, MAX_DIGEST_NAME_BYTES + 2).indexOf(CLOSE_BRACE);
  if (end < 1) return undefined;
  const name = String.fromCharCode(...message.subarray(1, 1 + end));
  return DIGESTS.has(name) ? (name as DigestName) : undefined;
}

function abortError(signal: AbortSignal): AbortError {
  return new AbortError("the handshake was aborted", { cause: signal.reason });
}

function ascii(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return bytes.length >= prefix.length && equals(bytes.subarray(0, prefix.length), prefix);
}

// Not constant-time: only for the public protocol words, never for MACs.
function equals(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A short, printable rendering of untrusted bytes for an error message. */
function preview(bytes: Uint8Array): string {
  const head = bytes.subarray(0, 24);
  const printable = head.every((b) => b >= 0x20 && b < 0x7f);
  const shown = printable
    ? JSON.stringify(String.fromCharCode(...head))
    : `0x${Array.from(head, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  return bytes.length > head.length ? `${shown}… (${bytes.length} bytes)` : shown;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
