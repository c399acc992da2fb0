"""moto's server with AWS KMS key-state enforcement added.

moto reports a key's state correctly (DescribeKey) but still encrypts and decrypts with a
disabled key or one pending deletion. Real KMS refuses: DisabledException for a disabled
key, KMSInvalidStateException for one pending deletion. This wraps the backend methods that
use key material so tests of revoked and disabled keys meet the real behaviour, then runs
moto's own server entry point with the same arguments (`-H 127.0.0.1 -p PORT`).
"""

import sys

from moto.core.exceptions import JsonRESTError
from moto.kms.models import KmsBackend
from moto.server import main


def refuse_unusable(key):
    if key.key_state == "Disabled":
        raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
    if key.key_state in ("PendingDeletion", "PendingReplicaDeletion"):
        raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is pending deletion.")


original_encrypt = KmsBackend.encrypt
original_decrypt = KmsBackend.decrypt
original_enable = KmsBackend.enable_key


def encrypt(self, key_id, plaintext, encryption_context):
    # Also covers GenerateDataKey and the destination of ReEncrypt, which call encrypt.
    refuse_unusable(self.keys[self.any_id_to_key_id(key_id)])
    return original_encrypt(self, key_id, plaintext, encryption_context)


def decrypt(self, ciphertext_blob, encryption_context, key_id=None):
    plaintext, arn = original_decrypt(self, ciphertext_blob, encryption_context, key_id)
    refuse_unusable(self.keys[self.any_id_to_key_id(arn)])
    return plaintext, arn


def enable_key(self, key_id):
    key = self.keys[self.any_id_to_key_id(key_id)]
    if key.key_state == "PendingDeletion":
        raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is pending deletion.")
    return original_enable(self, key_id)


KmsBackend.encrypt = encrypt
KmsBackend.decrypt = decrypt
KmsBackend.enable_key = enable_key

if __name__ == "__main__":
    main(sys.argv[1:])
