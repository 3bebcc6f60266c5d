"""openapi.yaml, read by a YAML 1.1 loader (PyYAML, as many generators and CI tools are), is the
document the relay serves as /openapi.json: no example turned into a date, a boolean or a number.

Usage: python yaml11.py <openapi.yaml> <relay URL>
"""

import json
import sys
import urllib.request

import yaml


def differences(committed, served, path="$"):
    if type(committed) is not type(served):
        yield f"{path}: {committed!r} ({type(committed).__name__}) in the YAML, {served!r} served"
    elif isinstance(served, dict):
        for key in committed.keys() | served.keys():
            if key not in committed or key not in served:
                yield f"{path}.{key}: only {'served' if key in served else 'in the YAML'}"
            else:
                yield from differences(committed[key], served[key], f"{path}.{key}")
    elif isinstance(served, list):
        if len(committed) != len(served):
            yield f"{path}: {len(committed)} items in the YAML, {len(served)} served"
        for index, (a, b) in enumerate(zip(committed, served)):
            yield from differences(a, b, f"{path}[{index}]")
    elif committed != served:
        yield f"{path}: {committed!r} in the YAML, {served!r} served"


def main(document: str, base_url: str) -> None:
    with open(document, encoding="utf-8") as file:
        committed = yaml.safe_load(file)  # YAML 1.1: 2024-07-02T08:59:21Z is a datetime here
    with urllib.request.urlopen(f"{base_url}/openapi.json", timeout=10) as answer:
        served = json.load(answer)
    found = list(differences(committed, served))
    if found:
        sys.exit("openapi.yaml under YAML 1.1 differs from /openapi.json:\n  " + "\n  ".join(found[:20]))
    print("openapi.yaml under YAML 1.1 (PyYAML) equals the served /openapi.json")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
