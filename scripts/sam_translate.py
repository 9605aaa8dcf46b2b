"""Expand template.yaml's SAM resources into plain CloudFormation, offline.

`sam deploy` uploads the code and replaces each local CodeUri with an S3 URI
before the transform runs; this does the same with a placeholder, so that
cfn-lint can check what SAM generates (the Events of each function among it),
which it cannot see in the untransformed template.

Usage: python scripts/sam_translate.py template.yaml out.json
"""

import json
import os
import sys

from samtranslator.public.translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies(ManagedPolicyLoader):
    """The template names no managed policies, so none need looking up in IAM."""

    def __init__(self):
        pass

    def load(self):
        return {}


def main(source, target):
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(source) as f:
        template = yaml_parse(f.read())
    for name, resource in template.get("Resources", {}).items():
        props = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and not str(props.get("CodeUri", "")).startswith("s3://"):
            props["CodeUri"] = f"s3://placeholder-bucket/{name}.zip"
    out = transform(template, {}, NoManagedPolicies())
    with open(target, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{source}: {len(out['Resources'])} CloudFormation resources after the SAM transform")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
