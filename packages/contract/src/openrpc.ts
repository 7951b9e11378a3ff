import { type $ZodType, toJSONSchema } from "zod/v4/core";
import type { ContractSide, Definition } from "./contract.js";

/** A JSON Schema, as zod renders it. */
export type JsonSchema = Record<string, unknown>;

/** One parameter or result in an OpenRPC document. */
export interface ContentDescriptor {
  name: string;
  schema: JsonSchema;
  required?: boolean;
}

/** One method of an OpenRPC document (notifications and streams are marked with `x-ezipc-kind`). */
export interface OpenRpcMethod {
  name: string;
  paramStructure: "by-name" | "by-position" | "either";
  params: ContentDescriptor[];
  result?: ContentDescriptor;
  /** `method`, `notification` or `stream` (OpenRPC knows only request–response methods). */
  "x-ezipc-kind": Definition["kind"];
  /** The schema of progress values, for methods that report progress. */
  "x-ezipc-progress"?: JsonSchema;
  /** Whether the method is safe to retry. */
  "x-ezipc-idempotent"?: boolean;
}

/** An OpenRPC 1.3 document describing one side of a contract. */
export interface OpenRpcDocument {
  openrpc: "1.3.2";
  info: { title: string; version: string };
  methods: OpenRpcMethod[];
}

/**
 * Renders the JSON Schema of what crosses the wire for a schema: its input type (senders
 * write the input form). Types JSON cannot describe (a `Date` inside a codec's output,
 * a `bigint`) become `{}` rather than failing.
 */
export function wireSchema(schema: $ZodType): JsonSchema {
  return toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema;
}

/**
 * Describes one side of a contract as an OpenRPC document — what `rpc.discover` answers.
 *
 * @example
 * const doc = toOpenRpc(files.server, { title: "files", version: "1.0.0" });
 */
export function toOpenRpc(
  side: ContractSide,
  info: { title: string; version: string } = { title: "ezipc", version: "0.0.0" },
): OpenRpcDocument {
  const methods: OpenRpcMethod[] = [];
  for (const name of Object.keys(side)) {
    const def = side[name] as Definition;
    const { params, paramStructure } = describeParams(def.params);
    const method: OpenRpcMethod = { name, paramStructure, params, "x-ezipc-kind": def.kind };
    if (def.kind === "method") {
      method.result = {
        name: "result",
        schema: def.result ? wireSchema(def.result) : { type: "null" },
      };
      if (def.progress) method["x-ezipc-progress"] = wireSchema(def.progress);
      if (def.idempotent) method["x-ezipc-idempotent"] = true;
    } else if (def.kind === "stream") {
      method.result = { name: "item", schema: wireSchema(def.item) };
    }
    methods.push(method);
  }
  return { openrpc: "1.3.2", info, methods };
}

function describeParams(schema: $ZodType | undefined): {
  params: ContentDescriptor[];
  paramStructure: OpenRpcMethod["paramStructure"];
} {
  if (schema === undefined) return { params: [], paramStructure: "either" };
  const json = wireSchema(schema);
  const properties = json.properties as Record<string, JsonSchema> | undefined;
  if (json.type === "object" && properties !== undefined) {
    const required = new Set((json.required as string[] | undefined) ?? []);
    return {
      paramStructure: "by-name",
      params: Object.entries(properties).map(([name, s]) => ({
        name,
        schema: s,
        required: required.has(name),
      })),
    };
  }
  const items = json.prefixItems as JsonSchema[] | undefined;
  if (json.type === "array" && items !== undefined) {
    return {
      paramStructure: "by-position",
      params: items.map((s, i) => ({ name: `arg${i}`, schema: s, required: true })),
    };
  }
  // Unions of both forms, plain arrays, optional objects: one descriptor for the whole.
  return { paramStructure: "either", params: [{ name: "params", schema: json, required: true }] };
}
