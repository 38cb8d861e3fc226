// Writes, from ECS's published field definitions (ecs_flat, as Elastic's
// @elastic/ecs npm package carries them), what the privileged suite checks
// every ECS line against: each field's type, whether it is an array, and
// the allowed values of the categorization fields with the event types
// each category expects.
//
// Usage: node ecs_fields.js PATH/TO/node_modules/@elastic/ecs > fields.json
"use strict";
const { EcsFlat, EcsVersion } = require(require("path").resolve(process.argv[2]));
const fields = {};
for (const [name, f] of Object.entries(EcsFlat)) {
  const field = { type: f.type, array: (f.normalize || []).includes("array") };
  if (f.object_type) field.object_type = f.object_type;
  if (f.allowed_values) {
    field.allowed = f.allowed_values.map((v) => v.name);
    const expected = {};
    for (const v of f.allowed_values) {
      if (v.expected_event_types) expected[v.name] = v.expected_event_types;
    }
    if (Object.keys(expected).length) field.expected_event_types = expected;
  }
  fields[name] = field;
}
process.stdout.write(JSON.stringify({ version: EcsVersion, fields }));
