# The policy lopnr's service needs, and no more: its own folder of the KV v2
# mount "secret" (change both if you mount elsewhere or use another prefix).
#
#   data/lopnr/*      create and update (every write is a check-and-set), read
#   metadata/lopnr/*  read and list (sweeps, destruction), create and update
#                     (retain_until, delete_version_after, cas_required),
#                     delete (destruction: every version of a path)
#
# Not granted: soft delete, undelete and destroy of single versions, anything
# outside the prefix, anything in sys/.

path "secret/data/lopnr/*" {
  capabilities = ["create", "read", "update"]
}

path "secret/metadata/lopnr/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}

# The folder itself, to list the projects.
path "secret/metadata/lopnr" {
  capabilities = ["list"]
}
