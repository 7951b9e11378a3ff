import { createHmac } from "node:crypto";
import {
  AbortError,
  AuthenticationError,
  ConnectionClosedError,
  FrameTooLargeError,
} from "@ezipc/contract";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  acceptHandshake,
  connectHandshake,
  type DigestName,
  HANDSHAKE_MAX_FRAME_BYTES,
  type HandshakeChannel,
  type HandshakeOptions,
  normalizeAuthKey,
} from "./handshake.js";
import { nodeHandshakeCrypto } from "./node/handshake-crypto.js";

/** One end of an in-memory connection carrying whole frames. */
class MemoryChannel implements HandshakeChannel {
  /** Every frame this end sent, in order. */
  readonly sent: Uint8Array[] = [];
  peer!: MemoryChannel;
  closed = false;
  readonly #inbox: Uint8Array[] = [];
  #waiter:
    | { max: number; resolve(frame: Uint8Array): void; reject(error: Error): void }
    | undefined;

  send(frame: Uint8Array): void {
    if (this.closed) throw new ConnectionClosedError("channel closed");
    this.sent.push(frame.slice());
    this.peer.#deliver(frame.slice());
  }

  receive(maxBytes: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      if (this.#waiter) throw new Error("test bug: two receives at once");
      this.#waiter = { max: maxBytes, resolve, reject };
      this.#pump();
    });
  }

  /** Closes both ends; a pending receive on either rejects. */
  close(): void {
    for (const end of [this, this.peer]) {
      end.closed = true;
      end.#pump();
    }
  }

  #deliver(frame: Uint8Array): void {
    this.#inbox.push(frame);
    this.#pump();
  }

  #pump(): void {
    const waiter = this.#waiter;
    if (!waiter) return;
    const frame = this.#inbox.shift();
    if (frame) {
      this.#waiter = undefined;
      // A real transport refuses on the header alone; this models the same outcome.
      if (frame.length > waiter.max)
        waiter.reject(new FrameTooLargeError(frame.length, waiter.max));
      else waiter.resolve(frame);
    } else if (this.closed) {
      this.#waiter = undefined;
      waiter.reject(new ConnectionClosedError("channel closed"));
    }
  }
}

function channelPair(): [MemoryChannel, MemoryChannel] {
  const a = new MemoryChannel();
  const b = new MemoryChannel();
  a.peer = b;
  b.peer = a;
  return [a, b];
}

const KEY = normalizeAuthKey("correct horse battery staple");
const OTHER_KEY = normalizeAuthKey("incorrect horse");
const DIGESTS: DigestName[] = ["md5", "sha256", "sha384", "sha3_256", "sha3_384"];
const OPENSSL: Record<DigestName, string> = {
  md5: "md5",
  sha256: "sha256",
  sha384: "sha384",
  sha3_256: "sha3-256",
  sha3_384: "sha3-384",
};

const bytes = (text: string) => new Uint8Array(Buffer.from(text, "latin1"));
const text = (data: Uint8Array | undefined) => Buffer.from(data ?? []).toString("latin1");
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts));
/** HMAC computed independently of the code under test. */
const hmac = (digest: DigestName, key: Uint8Array, data: Uint8Array) =>
  new Uint8Array(createHmac(OPENSSL[digest], key).update(data).digest());
const CHALLENGE = bytes("#CHALLENGE#");
const WELCOME = bytes("#WELCOME#");
const FAILURE = bytes("#FAILURE#");

function options(extra: Partial<HandshakeOptions> = {}): HandshakeOptions {
  return { key: KEY, crypto: nodeHandshakeCrypto, ...extra };
}

/** What a peer's challenge asks us to sign: everything after `#CHALLENGE#`. */
function challengeMessage(frame: Uint8Array | undefined): Uint8Array {
  expect(text(frame).startsWith("#CHALLENGE#")).toBe(true);
  return frame!.subarray(CHALLENGE.length);
}

/** Plays Python ≤ 3.11's answerer: a raw HMAC-MD5 of the challenge, then reads the verdict. */
async function legacyAnswer(end: MemoryChannel, key = KEY): Promise<string> {
  const message = challengeMessage(await end.receive(256));
  end.send(hmac("md5", key, message));
  return text(await end.receive(256));
}

/** Plays Python ≤ 3.11's challenger: 20 unprefixed random bytes, raw HMAC-MD5 expected. */
async function legacyChallenge(end: MemoryChannel, key = KEY): Promise<Uint8Array> {
  const message = new Uint8Array(20).fill(7);
  end.send(cat(CHALLENGE, message));
  const answer = await end.receive(256);
  const ok = Buffer.from(answer).equals(hmac("md5", key, message));
  end.send(ok ? WELCOME : FAILURE);
  return answer;
}

/** Sends a challenge with the given message and returns the peer's answer. */
async function challengeWith(end: MemoryChannel, message: Uint8Array): Promise<Uint8Array> {
  end.send(cat(CHALLENGE, message));
  return end.receive(256);
}

afterEach(() => {
  vi.useRealTimers();
});

describe("acceptHandshake + connectHandshake", () => {
  it.each(DIGESTS)(
    "authenticates both ways with the same key, challenging with %s",
    async (digest) => {
      const [server, client] = channelPair();
      const [accepted, connected] = await Promise.all([
        acceptHandshake(server, options({ digest })),
        connectHandshake(client, options({ digest })),
      ]);
      expect(accepted).toEqual({ peerDigest: digest });
      expect(connected).toEqual({ peerDigest: digest });

      // The listening side challenges first: #CHALLENGE#{digest} + 40 random bytes.
      const challenge = server.sent[0]!;
      expect(text(challenge.subarray(0, CHALLENGE.length + digest.length + 2))).toBe(
        `#CHALLENGE#{${digest}}`,
      );
      expect(challenge.length).toBe(CHALLENGE.length + digest.length + 2 + 40);
      // The answer is {digest} + HMAC over all of M, prefix included (as Python computes it).
      const message = challenge.subarray(CHALLENGE.length);
      expect(client.sent[0]).toEqual(cat(bytes(`{${digest}}`), hmac(digest, KEY, message)));
      expect(server.sent.map(text).slice(1)).toEqual(["#WELCOME#", expect.any(String)]);
      expect(client.sent.map(text)[2]).toBe("#WELCOME#");
      expect(server.sent).toHaveLength(3);
      expect(client.sent).toHaveLength(3);
    },
  );

  it("uses a fresh random challenge every time", async () => {
    const challenges = new Set<string>();
    for (let i = 0; i < 3; i++) {
      const [server, client] = channelPair();
      await Promise.all([acceptHandshake(server, options()), connectHandshake(client, options())]);
      challenges.add(text(server.sent[0]));
      challenges.add(text(client.sent[1]));
    }
    expect(challenges.size).toBe(6);
  });

  it("lets each side challenge with its own digest", async () => {
    const [server, client] = channelPair();
    const [accepted, connected] = await Promise.all([
      acceptHandshake(server, options({ digest: "sha3_384" })),
      connectHandshake(client, options({ digest: "sha256" })),
    ]);
    expect(accepted.peerDigest).toBe("sha3_384");
    expect(connected.peerDigest).toBe("sha256");
  });

  it("fails on both sides with a wrong key, the challenger having sent #FAILURE#", async () => {
    const [server, client] = channelPair();
    const [accepted, connected] = await Promise.allSettled([
      acceptHandshake(server, options()),
      connectHandshake(client, options({ key: OTHER_KEY })),
    ]);
    expect(accepted).toMatchObject({ status: "rejected", reason: expect.any(AuthenticationError) });
    expect(connected).toMatchObject({
      status: "rejected",
      reason: expect.any(AuthenticationError),
    });
    expect((accepted as PromiseRejectedResult).reason.message).toMatch(
      /authentication failed: the peer's key does not match/,
    );
    expect((connected as PromiseRejectedResult).reason.message).toMatch(/rejected our answer/);
    expect(server.sent.map(text).at(-1)).toBe("#FAILURE#");
  });

  it("as the connecting side, sends #FAILURE# when the listening side answers wrongly", async () => {
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options());
    const message = new Uint8Array(40).fill(1);
    const prefixed = cat(bytes("{sha256}"), message);
    const answer = await challengeWith(server, prefixed);
    expect(answer).toEqual(cat(bytes("{sha256}"), hmac("sha256", KEY, prefixed)));
    server.send(WELCOME);
    // Now we answer the client's challenge with the wrong key.
    const theirs = challengeMessage(await server.receive(256));
    server.send(cat(bytes("{sha256}"), hmac("sha256", OTHER_KEY, theirs)));
    await expect(connecting).rejects.toThrow(/the peer's key does not match/);
    expect(text(await server.receive(256))).toBe("#FAILURE#");
  });

  it("accepts a different non-MD5 digest in the answer, as Python does", async () => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options({ digest: "sha256" }));
    const message = challengeMessage(await client.receive(256));
    client.send(cat(bytes("{sha3_256}"), hmac("sha3_256", KEY, message)));
    expect(text(await client.receive(256))).toBe("#WELCOME#");
    const theirs = cat(bytes("{sha384}"), new Uint8Array(40));
    await challengeWith(client, theirs);
    client.send(WELCOME);
    await expect(accepting).resolves.toEqual({ peerDigest: "sha3_256" });
  });
});

describe("legacy MD5 (Python ≤ 3.11)", () => {
  it("refuses a raw 16-byte MD5 answer without allowLegacyDigest, sending #FAILURE#", async () => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options());
    const verdict = legacyAnswer(client);
    await expect(accepting).rejects.toSatisfy(
      (error: Error) =>
        error instanceof AuthenticationError &&
        /legacy MD5 digest/.test(error.message) &&
        /allowLegacyDigest/.test(error.message),
    );
    expect(await verdict).toBe("#FAILURE#");
  });

  it("accepts a raw 16-byte MD5 answer with allowLegacyDigest, and answers a legacy challenge", async () => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options({ allowLegacyDigest: true }));
    expect(await legacyAnswer(client)).toBe("#WELCOME#");
    const ourAnswer = await legacyChallenge(client);
    // A 20-byte challenge is answered with the raw HMAC-MD5, no prefix.
    expect(ourAnswer).toHaveLength(16);
    await expect(accepting).resolves.toEqual({ peerDigest: "md5-legacy" });
  });

  it("refuses a raw MD5 answer made with the wrong key", async () => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options({ allowLegacyDigest: true }));
    const verdict = legacyAnswer(client, OTHER_KEY);
    await expect(accepting).rejects.toThrow(/the peer's key does not match/);
    expect(await verdict).toBe("#FAILURE#");
  });

  it("refuses to answer a 20-byte challenge without allowLegacyDigest", async () => {
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options());
    server.send(cat(CHALLENGE, new Uint8Array(20).fill(7)));
    await expect(connecting).rejects.toSatisfy(
      (error: Error) =>
        error instanceof AuthenticationError &&
        /the peer uses the legacy MD5 digest/.test(error.message) &&
        /allowLegacyDigest/.test(error.message),
    );
    expect(client.sent).toEqual([]);
  });

  it("answers a 20-byte challenge with raw HMAC-MD5 with allowLegacyDigest", async () => {
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options({ allowLegacyDigest: true }));
    const ourAnswer = await legacyChallenge(server);
    expect(ourAnswer).toEqual(hmac("md5", KEY, new Uint8Array(20).fill(7)));
    expect(await legacyAnswer(server)).toBe("#WELCOME#");
    await expect(connecting).resolves.toEqual({ peerDigest: "md5-legacy" });
  });

  it("refuses a {md5} answer to a sha256 challenge unless allowed", async () => {
    for (const allowLegacyDigest of [false, true]) {
      const [server, client] = channelPair();
      const accepting = acceptHandshake(server, options({ allowLegacyDigest }));
      const message = challengeMessage(await client.receive(256));
      client.send(cat(bytes("{md5}"), hmac("md5", KEY, message)));
      const verdict = text(await client.receive(256));
      if (allowLegacyDigest) {
        expect(verdict).toBe("#WELCOME#");
        client.close();
        await expect(accepting).rejects.toThrow(/connection|closed/);
      } else {
        expect(verdict).toBe("#FAILURE#");
        await expect(accepting).rejects.toThrow(/MD5 digest; set allowLegacyDigest/);
      }
    }
  });

  it("accepts a {md5} answer when md5 is the digest we asked for", async () => {
    const [server, client] = channelPair();
    const [accepted] = await Promise.all([
      acceptHandshake(server, options({ digest: "md5" })),
      connectHandshake(client, options()),
    ]);
    expect(accepted.peerDigest).toBe("md5");
  });
});

describe("malformed messages", () => {
  async function answerOf(challenge: Uint8Array, extra: Partial<HandshakeOptions> = {}) {
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options(extra));
    server.send(challenge);
    return { connecting, server, client };
  }

  it("rejects a first frame that is not a challenge, saying what came", async () => {
    const { connecting, client } = await answerOf(bytes('{"jsonrpc":"2.0","method":"x"}'));
    const error = await connecting.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AuthenticationError);
    // The preview shows the first 24 bytes as a quoted string, then the total length.
    expect((error as Error).message).toBe(
      `authentication failed: expected the peer's #CHALLENGE#, got ${JSON.stringify('{"jsonrpc":"2.0","method')}… (30 bytes) (is an authKey set on both sides?)`,
    );
    expect(client.sent).toEqual([]);
  });

  it.each([
    ["an unknown digest", "{sha1}" + "x".repeat(40)],
    ["no prefix", "x".repeat(40)],
    ["an unclosed prefix", "{sha256" + "x".repeat(40)],
    ["a prefix closed too late", "{sha3_256xx}" + "x".repeat(40)],
    ["an empty prefix", "{}" + "x".repeat(40)],
  ])("rejects a challenge with %s", async (_, message) => {
    const { connecting, client } = await answerOf(cat(CHALLENGE, bytes(message)));
    await expect(connecting).rejects.toThrow(/no supported \{digest\} prefix/);
    expect(client.sent).toEqual([]);
  });

  it("rejects a challenge shorter than 20 bytes", async () => {
    const { connecting } = await answerOf(cat(CHALLENGE, new Uint8Array(16)));
    await expect(connecting).rejects.toThrow(/challenge is too short \(16 bytes\)/);
  });

  it("rejects a verdict that is neither #WELCOME# nor #FAILURE#", async () => {
    const { connecting, server } = await answerOf(
      cat(CHALLENGE, bytes("{sha256}"), new Uint8Array(40)),
    );
    await server.receive(256);
    server.send(bytes("#WELCOME"));
    await expect(connecting).rejects.toThrow(/expected #WELCOME# or #FAILURE#, got "#WELCOME"/);
  });

  it.each([
    ["a 20-byte answer", new Uint8Array(20)],
    ["an unprefixed answer", new Uint8Array(32)],
    ["an empty answer", new Uint8Array(0)],
  ])("refuses %s with #FAILURE#", async (_, answer) => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options());
    await client.receive(256);
    client.send(answer);
    await expect(accepting).rejects.toThrow(/neither \{digest\}-prefixed nor a 16-byte legacy/);
    expect(text(await client.receive(256))).toBe("#FAILURE#");
  });

  it("refuses an answer whose MAC has the wrong length", async () => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options());
    const message = challengeMessage(await client.receive(256));
    client.send(cat(bytes("{sha256}"), hmac("sha256", KEY, message).subarray(0, 31)));
    await expect(accepting).rejects.toThrow(/sha256 answer is 31 bytes, expected 32/);
    expect(text(await client.receive(256))).toBe("#FAILURE#");
  });

  it("fails when the connection closes mid-handshake", async () => {
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options());
    await client.receive(256);
    client.close();
    await expect(accepting).rejects.toSatisfy(
      (error: Error) =>
        error instanceof AuthenticationError &&
        /no answer to our challenge from the peer: channel closed/.test(error.message) &&
        error.cause instanceof ConnectionClosedError,
    );
  });

  it("passes on an AuthenticationError from the channel as it is", async () => {
    const refusal = new AuthenticationError("the transport refused the frame");
    const channel: HandshakeChannel = { send() {}, receive: () => Promise.reject(refusal) };
    await expect(connectHandshake(channel, options())).rejects.toBe(refusal);
  });

  it("fails when it cannot send", async () => {
    const [server] = channelPair();
    server.close();
    await expect(acceptHandshake(server, options())).rejects.toThrow(
      /could not send our challenge: channel closed/,
    );
  });
});

describe("frame size", () => {
  it(`fails on a handshake frame over ${HANDSHAKE_MAX_FRAME_BYTES} bytes`, async () => {
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options());
    server.send(cat(CHALLENGE, bytes("{sha256}"), new Uint8Array(256 - 19 + 1)));
    await expect(connecting).rejects.toSatisfy(
      (error: Error) =>
        error instanceof AuthenticationError &&
        /257 bytes exceeds the limit of 256/.test(error.message) &&
        error.cause instanceof FrameTooLargeError,
    );
    expect(client.sent).toEqual([]);
  });

  it("asks the channel for at most 256 bytes, and never trusts a bigger frame", async () => {
    const seen: number[] = [];
    const channel: HandshakeChannel = {
      send() {},
      async receive(maxBytes) {
        seen.push(maxBytes);
        return new Uint8Array(300);
      },
    };
    await expect(connectHandshake(channel, options())).rejects.toThrow(
      /challenge is 300 bytes, over the handshake limit of 256 bytes/,
    );
    expect(seen).toEqual([256]);
  });

  it("answers a challenge of exactly 256 bytes", async () => {
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options());
    const message = cat(bytes("{sha256}"), new Uint8Array(256 - 19).fill(3));
    const answer = await challengeWith(server, message);
    expect(answer).toEqual(cat(bytes("{sha256}"), hmac("sha256", KEY, message)));
    server.close();
    await expect(connecting).rejects.toBeInstanceOf(AuthenticationError);
  });
});

describe("deadline and abort", () => {
  it("fails at the default 5000 ms deadline when the peer stalls, and not before", async () => {
    vi.useFakeTimers();
    const [server, client] = channelPair();
    const accepting = acceptHandshake(server, options());
    let settled = false;
    const settle = () => {
      settled = true;
    };
    accepting.then(settle, settle);
    await vi.advanceTimersByTimeAsync(4999);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    await expect(accepting).rejects.toSatisfy(
      (error: Error) =>
        error instanceof AuthenticationError &&
        error.message === "authentication failed: the handshake did not complete within 5000 ms",
    );
    expect(client.sent).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("applies the deadline to the whole handshake, not to each message", async () => {
    vi.useFakeTimers();
    const [server, client] = channelPair();
    const connecting = connectHandshake(client, options({ timeout: 1000 }));
    void connecting.catch(() => {});
    await vi.advanceTimersByTimeAsync(600);
    const message = cat(bytes("{sha256}"), new Uint8Array(40));
    await challengeWith(server, message);
    server.send(WELCOME);
    await server.receive(256); // the client's challenge; we never answer it
    await vi.advanceTimersByTimeAsync(399);
    expect(client.sent).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1);
    await expect(connecting).rejects.toThrow(/did not complete within 1000 ms/);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("leaves no timer behind after success", async () => {
    vi.useFakeTimers();
    const [server, client] = channelPair();
    await Promise.all([acceptHandshake(server, options()), connectHandshake(client, options())]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("accepts timeout: Infinity as no deadline", async () => {
    vi.useFakeTimers();
    const [server] = channelPair();
    const accepting = acceptHandshake(server, options({ timeout: Number.POSITIVE_INFINITY }));
    expect(vi.getTimerCount()).toBe(0);
    server.close();
    await expect(accepting).rejects.toBeInstanceOf(AuthenticationError);
  });

  it("rejects with AbortError when the signal aborts mid-handshake", async () => {
    const [server, client] = channelPair();
    const controller = new AbortController();
    const accepting = acceptHandshake(server, options({ signal: controller.signal }));
    await client.receive(256);
    const reason = new Error("shutting down");
    controller.abort(reason);
    await expect(accepting).rejects.toSatisfy(
      (error: Error) => error instanceof AbortError && error.cause === reason,
    );
    // Nothing more is sent after the abort, even if the answer arrives late.
    client.send(new Uint8Array(16));
    expect(server.sent).toHaveLength(1);
  });

  it("does not start when the signal is already aborted", async () => {
    const [server] = channelPair();
    await expect(
      acceptHandshake(server, options({ signal: AbortSignal.abort() })),
    ).rejects.toBeInstanceOf(AbortError);
    expect(server.sent).toEqual([]);
  });
});

describe("options", () => {
  it("refuses an empty key, an unknown digest and a bad timeout before sending", async () => {
    const [server] = channelPair();
    await expect(acceptHandshake(server, options({ key: new Uint8Array() }))).rejects.toThrow(
      TypeError,
    );
    await expect(
      acceptHandshake(server, options({ digest: "sha1" as DigestName })),
    ).rejects.toThrow(/unsupported handshake digest sha1/);
    for (const timeout of [0, -1, Number.NaN]) {
      await expect(acceptHandshake(server, options({ timeout }))).rejects.toThrow(RangeError);
    }
    expect(server.sent).toEqual([]);
  });
});

describe("normalizeAuthKey", () => {
  it("encodes a string as UTF-8", () => {
    expect(normalizeAuthKey("ключ")).toEqual(new Uint8Array(Buffer.from("ключ", "utf8")));
  });

  it.each([
    ["a Uint8Array", new Uint8Array([1, 2, 3])],
    ["a Buffer", Buffer.from([1, 2, 3])],
  ])("copies %s into a plain Uint8Array", (_, key) => {
    const normalized = normalizeAuthKey(key);
    key[0] = 9;
    expect(normalized).toEqual(new Uint8Array([1, 2, 3]));
    expect(Object.getPrototypeOf(normalized)).toBe(Uint8Array.prototype);
  });

  it("refuses an empty key", () => {
    expect(() => normalizeAuthKey("")).toThrow(/authKey must not be empty/);
    expect(() => normalizeAuthKey(new Uint8Array())).toThrow(TypeError);
  });
});
