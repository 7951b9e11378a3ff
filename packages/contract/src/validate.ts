import { $ZodAsyncError, type $ZodType, safeParse, safeParseAsync } from "zod/v4/core";
import type { ValidationIssue } from "./errors.js";

/** The outcome of validating one value against a schema. */
export type ValidationResult =
  | { readonly success: true; readonly data: unknown }
  | {
      readonly success: false;
      readonly issues: ValidationIssue[];
      /** Set when the schema itself threw (a transform's bug, or input too deep). */
      readonly error?: unknown;
    };

/** A compiled check for one schema; see {@link validator}. */
export interface Validator {
  /** Validates a value; returns a promise only for schemas with async refinements. */
  check(value: unknown): ValidationResult | Promise<ValidationResult>;
  /**
   * Whether the schema's parsed output is also its wire form (no transforms, pipes or
   * codecs), so the sender may send the parsed value — unknown keys stripped — instead of
   * the value it was given.
   */
  readonly plain: boolean;
}

const cache = new WeakMap<$ZodType, Validator>();

/**
 * Returns the validator of a schema, built once and cached: the hot path never re-inspects
 * a schema. A recursive schema given deeply nested input makes zod throw `RangeError`; that
 * is reported as a failed validation, never thrown.
 */
export function validator(schema: $ZodType): Validator {
  let v = cache.get(schema);
  if (v === undefined) {
    v = createValidator(schema);
    cache.set(schema, v);
  }
  return v;
}

function createValidator(schema: $ZodType): Validator {
  let isAsync = false;
  // zod's own success object ({ success: true, data }) is passed on as it is: this runs
  // four times per call (params and result, on each side), one allocation fewer each.
  const finish = (r: {
    success: boolean;
    data?: unknown;
    error?: { issues: unknown[] };
  }): ValidationResult =>
    r.success
      ? (r as { success: true; data: unknown })
      : { success: false as const, issues: (r.error?.issues ?? []) as ValidationIssue[] };
  // zod throws instead of returning issues when a transform throws, or (RangeError) when a
  // recursive schema meets input deeper than the stack: neither may escape a dispatcher.
  const failed = (error: unknown): ValidationResult => ({
    success: false,
    issues: [
      error instanceof RangeError
        ? { code: "too_deep", path: [], message: "Input is nested too deeply to validate" }
        : {
            code: "schema_error",
            path: [],
            message: `The schema threw while validating: ${error instanceof Error ? error.message : String(error)}`,
          },
    ],
    error,
  });
  return {
    plain: isPlainSchema(schema),
    check(value) {
      if (!isAsync) {
        try {
          return finish(safeParse(schema, value));
        } catch (error) {
          // A schema with async refinements cannot be checked synchronously; remember that
          // so the next call goes straight to the async path.
          if (!(error instanceof $ZodAsyncError)) return failed(error);
          isAsync = true;
        }
      }
      return safeParseAsync(schema, value).then(finish, failed);
    },
  };
}

const NOT_PLAIN = new Set(["pipe", "transform", "promise", "custom", "function"]);

/**
 * Whether a schema's parsed output is valid JSON for the same schema (no transform, pipe or
 * codec anywhere inside), so that the parsed value can be sent in place of the original.
 */
export function isPlainSchema(schema: $ZodType): boolean {
  const seen = new Set<unknown>();
  const visit = (s: unknown): boolean => {
    if (typeof s !== "object" || s === null || seen.has(s)) return true;
    seen.add(s);
    const def = (s as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
    if (def === undefined) return true;
    if (NOT_PLAIN.has(def.type as string)) return false;
    if (def.type === "lazy") return false; // its getter may build schemas anew on each call
    for (const key of ["innerType", "element", "keyType", "valueType", "rest", "in", "out"]) {
      if (key in def && !visit(def[key])) return false;
    }
    for (const key of ["items", "options"]) {
      const list = def[key];
      if (Array.isArray(list) && !list.every(visit)) return false;
    }
    const shape = def.shape as Record<string, unknown> | undefined;
    if (shape !== undefined) {
      for (const key of Object.keys(shape)) if (!visit(shape[key])) return false;
    }
    return true;
  };
  return visit(schema);
}
