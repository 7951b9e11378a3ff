import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SlotTable } from "./slots.js";

describe("SlotTable", () => {
  it("behaves like a Map for any sequence of adds and removes (model test)", () => {
    const op = fc.oneof(
      fc.record({ kind: fc.constant("set" as const), key: fc.integer({ min: -5000, max: 5000 }) }),
      fc.record({ kind: fc.constant("take" as const), key: fc.integer({ min: -5000, max: 5000 }) }),
      fc.record({ kind: fc.constant("next" as const), key: fc.constant(0) }),
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 400 }), (ops) => {
        const table = new SlotTable<{ key: number }>();
        const model = new Map<number, { key: number }>();
        let counter = 0;
        for (const { kind, key: k } of ops) {
          const key = kind === "next" ? counter++ : k;
          if (kind === "take") {
            expect(table.take(key)).toBe(model.get(key));
            model.delete(key);
          } else if (!model.has(key)) {
            const value = { key };
            table.set(key, value);
            model.set(key, value);
          }
          expect(table.size).toBe(model.size);
          expect(table.get(key)).toBe(model.get(key));
        }
        for (const [key, value] of model) expect(table.get(key)).toBe(value);
        expect(table.values()).toEqual(
          [...model.keys()].sort((a, b) => a - b).map((key) => ({ key })),
        );
      }),
    );
  });

  it("keeps consecutive keys in a table sized to what is in flight", () => {
    const table = new SlotTable<number>();
    let oldest = 1;
    for (let id = 1; id <= 100_000; id++) {
      table.set(id, id);
      if (id - oldest >= 256 && table.take(oldest++) !== oldest - 1) throw new Error("lost");
    }
    expect(table.size).toBe(256);
    expect(table.capacity).toBeLessThanOrEqual(2048);
  });

  it("moves a long-lived entry aside instead of growing without bound", () => {
    const table = new SlotTable<string>();
    table.set(0, "long stream");
    let taken = 0;
    for (let id = 1; id <= 200_000; id++) {
      table.set(id, "call");
      if (table.take(id) === "call") taken++;
    }
    expect(taken).toBe(200_000);
    expect(table.capacity).toBeLessThanOrEqual(16);
    expect(table.get(0)).toBe("long stream");
    expect(table.take(0)).toBe("long stream");
    expect(table.size).toBe(0);
  });

  it("bounds the table for keys chosen to collide", () => {
    const table = new SlotTable<number>();
    const keys = Array.from({ length: 1000 }, (_, i) => i * 2 ** 20);
    for (const key of keys) table.set(key, key);
    expect(table.capacity).toBeLessThanOrEqual(8 * 1000);
    for (const key of keys) expect(table.get(key)).toBe(key);
    for (const key of keys) expect(table.take(key)).toBe(key);
    expect(table.size).toBe(0);
  });

  it("finds nothing for keys that are not numbers", () => {
    const table = new SlotTable<number>();
    table.set(1, 1);
    expect(table.get("1")).toBeUndefined();
    expect(table.take(null)).toBeUndefined();
    expect(table.size).toBe(1);
  });

  it("drops a large table once it empties", () => {
    const table = new SlotTable<number>();
    for (let id = 0; id < 5000; id++) table.set(id, id);
    expect(table.capacity).toBeGreaterThan(1024);
    for (let id = 0; id < 5000; id++) table.take(id);
    expect(table.capacity).toBe(0);
    table.set(7, 7);
    expect(table.get(7)).toBe(7);
  });
});
