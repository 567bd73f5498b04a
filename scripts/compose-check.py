"""Validates a Compose file against the Compose specification's JSON schema
and prints the file as JSON (YAML anchors and merge keys resolved), for the
deployment test's own checks. Exit 1 with every violation on stderr.
  compose-check.py compose_spec.json docker-compose.yml
"""
import json
import sys

import jsonschema
import yaml

schema_path, compose_path = sys.argv[1:3]
with open(schema_path) as f:
    schema = json.load(f)
with open(compose_path) as f:
    doc = yaml.safe_load(f)
validator = jsonschema.validators.validator_for(schema)(schema)
errors = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
for e in errors:
    where = "/".join(map(str, e.absolute_path)) or "(top)"
    print(f"{compose_path}: {where}: {e.message}", file=sys.stderr)
if errors:
    sys.exit(1)
json.dump(doc, sys.stdout)
