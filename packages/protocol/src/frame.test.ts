import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  DEFAULT_MAX_FRAME_BYTES,
  encodeFrame,
  FrameDecoder,
  HEADER_BYTES,
  sniffForeignProtocol,
  writeHeader,
} from "./frame.js";

/** What a decoder reported, in order; frame payloads are copied (the decoder may hand out views). */
type Event =
  | { kind: "frame"; payload: Uint8Array }
  | { kind: "oversize"; length: number; head: Uint8Array };

function recordingDecoder(maxFrameBytes?: number): { decoder: FrameDecoder; events: Event[] } {
  const events: Event[] = [];
  const decoder = new FrameDecoder(
    {
      frame: (payload) => events.push({ kind: "frame", payload: payload.slice() }),
      oversize: (length, head) => events.push({ kind: "oversize", length, head: head.slice() }),
    },
    maxFrameBytes,
  );
  return { decoder, events };
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Cuts `bytes` at the given offsets (taken modulo the length, deduplicated, sorted). */
function split(bytes: Uint8Array, cuts: readonly number[]): Uint8Array[] {
  const points = [
    ...new Set(cuts.map((c) => (bytes.length === 0 ? 0 : c % (bytes.length + 1)))),
  ].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let from = 0;
  for (const p of points) {
    chunks.push(bytes.subarray(from, p));
    from = p;
  }
  chunks.push(bytes.subarray(from));
  return chunks;
}

function header(length: number): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  writeHeader(h, 0, length);
  return h;
}

const payloads = fc.array(fc.uint8Array({ minLength: 0, maxLength: 300 }), { maxLength: 20 });
const cuts = fc.array(fc.nat(), { maxLength: 40 });

describe("FrameDecoder", () => {
  it("yields the same frames, in order, for any split of a valid stream", () => {
    fc.assert(
      fc.property(payloads, cuts, (frames, at) => {
        const stream = concat(frames.map(encodeFrame));
        const { decoder, events } = recordingDecoder();
        for (const chunk of split(stream, at)) decoder.push(chunk);
        expect(events).toEqual(frames.map((payload) => ({ kind: "frame", payload })));
        expect(decoder.idle).toBe(true);
        expect(decoder.bufferedBytes).toBe(0);
      }),
    );
  });

  it("yields the same frames when fed one byte at a time", () => {
    fc.assert(
      fc.property(payloads, (frames) => {
        const stream = concat(frames.map(encodeFrame));
        const { decoder, events } = recordingDecoder();
        for (let i = 0; i < stream.length; i++) decoder.push(stream.subarray(i, i + 1));
        expect(events.map((e) => (e.kind === "frame" ? e.payload : undefined))).toEqual(frames);
      }),
    );
  });

  it("delivers an empty frame for a zero length header", () => {
    const { decoder, events } = recordingDecoder();
    decoder.push(new Uint8Array([0, 0, 0, 0, 0, 0, 0, 1, 42]));
    expect(events).toEqual([
      { kind: "frame", payload: new Uint8Array(0) },
      { kind: "frame", payload: new Uint8Array([42]) },
    ]);
  });

  it("holds a partial frame until the rest arrives, and reports what it buffers", () => {
    const { decoder, events } = recordingDecoder();
    const frame = encodeFrame(new Uint8Array([1, 2, 3, 4, 5]));
    decoder.push(frame.subarray(0, 2));
    expect(decoder.idle).toBe(false);
    expect(decoder.bufferedBytes).toBe(2);
    decoder.push(frame.subarray(2, 6));
    expect(decoder.bufferedBytes).toBe(HEADER_BYTES + 2);
    expect(events).toEqual([]);
    decoder.push(frame.subarray(6));
    expect(events).toEqual([{ kind: "frame", payload: new Uint8Array([1, 2, 3, 4, 5]) }]);
    expect(decoder.idle).toBe(true);
  });

  it("never throws on random bytes, whatever the limit and chunking", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 2_000 }),
        cuts,
        fc.constantFrom(0, 1, 16, 1024, DEFAULT_MAX_FRAME_BYTES),
        (bytes, at, max) => {
          const { decoder, events } = recordingDecoder(max);
          expect(() => {
            for (const chunk of split(bytes, at)) decoder.push(chunk);
          }).not.toThrow();
          // Nothing it reports can be larger than what it was given or than the limit.
          for (const e of events) {
            if (e.kind === "frame") expect(e.payload.length).toBeLessThanOrEqual(max);
            else expect(e.length).toBeGreaterThan(max);
          }
          expect(decoder.bufferedBytes).toBeLessThanOrEqual(bytes.length);
        },
      ),
    );
  });

  it("reports an oversize header, never buffers its body, and decodes the frame after it", () => {
    const max = 64;
    fc.assert(
      fc.property(
        fc.integer({ min: max + 1, max: 5_000 }),
        fc.uint8Array({ maxLength: max }),
        cuts,
        (size, next, at) => {
          const body = new Uint8Array(size).fill(0xab);
          const stream = concat([header(size), body, encodeFrame(next)]);
          const { decoder, events } = recordingDecoder(max);
          let peak = 0;
          let consumed = 0;
          for (const chunk of split(stream, at)) {
            decoder.push(chunk);
            consumed += chunk.length;
            // While the oversize body streams in, at most its header is accounted for.
            if (consumed < HEADER_BYTES + size) peak = Math.max(peak, decoder.bufferedBytes);
          }
          expect(peak).toBeLessThanOrEqual(HEADER_BYTES);
          expect(events).toEqual([
            { kind: "oversize", length: size, head: header(size) },
            { kind: "frame", payload: next },
          ]);
          expect(decoder.idle).toBe(true);
        },
      ),
    );
  });

  it("keeps bufferedBytes flat while a huge announced body streams in", () => {
    const { decoder, events } = recordingDecoder(1024);
    const size = 64 * 1024 * 1024;
    decoder.push(header(size));
    const chunk = new Uint8Array(64 * 1024);
    for (let sent = 0; sent < size; sent += chunk.length) {
      decoder.push(chunk);
      expect(decoder.bufferedBytes).toBeLessThanOrEqual(HEADER_BYTES);
    }
    decoder.push(encodeFrame(new Uint8Array([7])));
    expect(events).toEqual([
      { kind: "oversize", length: size, head: header(size) },
      { kind: "frame", payload: new Uint8Array([7]) },
    ]);
  });

  it("reports the largest header (2^32 - 1) as its true unsigned length", () => {
    const { decoder, events } = recordingDecoder();
    decoder.push(new Uint8Array([0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
    expect(events).toEqual([
      { kind: "oversize", length: 2 ** 32 - 1, head: new Uint8Array([0xff, 0xff, 0xff, 0xff]) },
    ]);
    expect(decoder.bufferedBytes).toBeLessThanOrEqual(HEADER_BYTES);
  });

  it("accepts a frame of exactly maxFrameBytes and refuses one byte more", () => {
    const { decoder, events } = recordingDecoder(8);
    const exact = new Uint8Array(8).fill(1);
    decoder.push(concat([encodeFrame(exact), encodeFrame(new Uint8Array(9))]));
    expect(events).toEqual([
      { kind: "frame", payload: exact },
      { kind: "oversize", length: 9, head: header(9) },
    ]);
  });

  it("applies a changed limit to frames whose header has not arrived yet", () => {
    const { decoder, events } = recordingDecoder(4);
    decoder.push(encodeFrame(new Uint8Array(6)));
    decoder.maxFrameBytes = 16;
    expect(decoder.maxFrameBytes).toBe(16);
    decoder.push(encodeFrame(new Uint8Array(6)));
    expect(events.map((e) => e.kind)).toEqual(["oversize", "frame"]);
  });
});

describe("encodeFrame", () => {
  it("prefixes the payload with its length as a 4-byte big-endian integer and round-trips", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70_000 }), (payload) => {
        const frame = encodeFrame(payload);
        expect(frame.length).toBe(HEADER_BYTES + payload.length);
        const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
        expect(view.getUint32(0, false)).toBe(payload.length);
        expect(frame.subarray(HEADER_BYTES)).toEqual(payload);
        const { decoder, events } = recordingDecoder();
        decoder.push(frame);
        expect(events).toEqual([{ kind: "frame", payload }]);
      }),
    );
  });

  it("writes lengths above 2^31 unsigned", () => {
    const h = header(0x8000_0001);
    expect([...h]).toEqual([0x80, 0x00, 0x00, 0x01]);
  });
});

describe("sniffForeignProtocol", () => {
  const ascii = (text: string) => new TextEncoder().encode(text);

  it.each(["GET ", "POST", "PUT ", "HEAD"])("recognises an HTTP request starting %j", (verb) => {
    expect(sniffForeignProtocol(ascii(verb))).toMatch(/HTTP/);
  });

  it("recognises a TLS ClientHello (0x16 0x03)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xff }), fc.integer({ min: 0, max: 0xff }), (a, b) => {
        expect(sniffForeignProtocol(new Uint8Array([0x16, 0x03, a, b]))).toMatch(/TLS/);
      }),
    );
  });

  it("returns undefined for the header of any ordinary length", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0x15ff_ffff }), (length) => {
        expect(sniffForeignProtocol(header(length))).toBeUndefined();
      }),
    );
    expect(sniffForeignProtocol(header(DEFAULT_MAX_FRAME_BYTES + 1))).toBeUndefined();
  });
});
