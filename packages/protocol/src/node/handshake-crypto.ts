import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import type { DigestName, HandshakeCrypto } from "../handshake.js";

// The wire spells digests as Python's hashlib does; OpenSSL spells SHA-3 with a hyphen.
const OPENSSL_NAMES: Readonly<Record<DigestName, string>> = {
  md5: "md5",
  sha256: "sha256",
  sha384: "sha384",
  sha3_256: "sha3-256",
  sha3_384: "sha3-384",
};

/**
 * The handshake's crypto primitives on `node:crypto`: pass it as `crypto` to
 * `acceptHandshake` / `connectHandshake`.
 *
 * @example
 * await connectHandshake(channel, { key: normalizeAuthKey(authKey), crypto: nodeHandshakeCrypto });
 */
export const nodeHandshakeCrypto: HandshakeCrypto = {
  hmac(digest, key, data) {
    const name = OPENSSL_NAMES[digest];
    // A JavaScript caller could pass any string; never hand OpenSSL an unvetted name.
    if (!Object.hasOwn(OPENSSL_NAMES, digest) || name === undefined) {
      throw new RangeError(`unsupported handshake digest ${String(digest)}`);
    }
    return plain(createHmac(name, key).update(data).digest());
  },
  randomBytes(n) {
    return plain(randomBytes(n));
  },
  timingSafeEqual(a, b) {
    // node:crypto throws on different lengths; the length of a MAC is no secret.
    return a.length === b.length && timingSafeEqual(a, b);
  },
};

// A plain view of a Buffer's bytes: Buffer's `slice` shares memory and its `toJSON`
// differs, surprises the runtime-neutral core should not meet.
function plain(buffer: Buffer): Uint8Array {
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
