"""Prepares a moto server for IAM-enforced tests, then switches its IAM auth on.

Creates three IAM users and prints their access keys as shell assignments:
- admin: may do anything; tests use it to create keys and roles.
- console: the console's own identity (KMS and sts:AssumeRole), like the platform account.
- denied: a console identity with no KMS permissions, as after revocation.
Usage: setup_iam.py http://127.0.0.1:PORT
"""

import json
import sys
import urllib.request

import boto3

url = sys.argv[1]
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")


def user(name, statements):
    iam.create_user(UserName=name)
    if statements:
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


admin = user("admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])
console = user("console", [{"Effect": "Allow", "Action": ["kms:*", "sts:AssumeRole"], "Resource": "*"}])
denied = user("denied", [{"Effect": "Allow", "Action": ["sts:GetCallerIdentity"], "Resource": "*"}])

request = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                 headers={"Content-Type": "text/plain"})
urllib.request.urlopen(request).read()

for name, (key_id, secret) in {"ADMIN": admin, "CONSOLE": console, "DENIED": denied}.items():
    print(f"export CMEK_TEST_IAM_{name}_KEY={key_id} CMEK_TEST_IAM_{name}_SECRET={secret}")
