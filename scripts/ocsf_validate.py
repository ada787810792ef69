"""Validates OCSF JSON lines against the published OCSF schema with two third-party validators.

Verdict's OCSF mapping (query/src/ocsf.rs) must not be checked by code the project wrote itself,
so this script only wires published tools together:
  - ocsf-json-schema ships the OCSF schema releases as exported by the OCSF schema server and
    turns a class (with the profiles an event declares) into a JSON Schema 2020-12 document;
    `jsonschema` validates each line against it (types, enums, required fields, no unknown
    fields, `at_least_one` constraints);
  - pydantic-ocsf ships the same releases as models that also check each enum's caption against
    its id (`status` must be the caption of `status_id`, and so on).
scripts/deps.sh installs both (pinned) into target/ocsf-venv.

Usage: ocsf_validate.py VERSION FILE...   (VERSION: the OCSF release every line must claim)
Prints one line per problem (file:line: field: message) and exits 1 if there is any.
"""

import importlib
import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema


def camel(name):
    return "".join(part.capitalize() for part in name.split("_"))


class Validators:
    def __init__(self, version):
        self.version = version
        self.schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
        self.events = importlib.import_module("ocsf.v" + version.replace(".", "_") + ".events")
        self.cache = {}

    def for_event(self, event):
        class_name = self.schema.lookup_class_name_from_uid(class_uid=event["class_uid"])
        profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
        key = (class_name, profiles)
        if key not in self.cache:
            json_schema = self.schema.get_class_schema(class_name=class_name, profiles=list(profiles))
            self.cache[key] = (Draft202012Validator(json_schema), getattr(self.events, camel(class_name)))
        return self.cache[key]

    def problems(self, event):
        claimed = event.get("metadata", {}).get("version")
        if claimed != self.version:
            yield f"metadata.version: {claimed!r}, expected {self.version!r}"
            return
        json_schema, model = self.for_event(event)
        for error in json_schema.iter_errors(event):
            path = ".".join(str(p) for p in error.absolute_path) or "(event)"
            yield f"{path}: {error.message[:300]}"
        try:
            model.model_validate(event)
        except Exception as error:  # pydantic.ValidationError: every problem of the model
            for line in str(error).splitlines():
                yield f"pydantic-ocsf: {line.strip()[:300]}"


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    validators = Validators(sys.argv[1])
    failed = checked = 0
    for path in sys.argv[2:]:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                checked += 1
                problems = list(validators.problems(json.loads(line)))
                failed += bool(problems)
                for problem in problems:
                    print(f"{path}:{number}: {problem}")
    print(f"{checked} OCSF events checked, {failed} invalid")
    sys.exit(1 if failed or not checked else 0)


if __name__ == "__main__":
    main()
