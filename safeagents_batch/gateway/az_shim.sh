#!/bin/sh
# safeagents-batch: the `az` of a container whose model calls go through the batch's gateway.
# `az account get-access-token` prints the attempt's own token (what AzureCliCredential reads);
# the gateway swaps in the real credential. There is no Azure login in this container.
if [ "$1 $2" = "account get-access-token" ]; then
    expires=$(( $(date +%s) + 3600 ))
    local_time=$(date -d "@$expires" '+%Y-%m-%d %H:%M:%S.000000')
    printf '{"accessToken": "%s", "expiresOn": "%s", "expires_on": %s, "tokenType": "Bearer", "subscription": "safeagents-batch", "tenant": "safeagents-batch"}\n' \
        "$SAFEAGENTS_MODEL_TOKEN" "$local_time" "$expires"
    exit 0
fi
echo "az: only 'az account get-access-token' works here: model calls go through the batch's gateway" >&2
exit 1
