#!/bin/sh
# Runs as root while the Bento's image is built (bentofile.yaml: docker.setup_script), after
# BentoML has created the `bentoml` user (UID/GID 1034) and before the Bento's files are copied.
set -eu

# The state folder ($CHURN_HOME) and its mount points, owned by the service's user: a plain
# `docker run` of the image can write its inference log there, and in a pod the volumes
# mounted over these paths (model store, inference log) find them.
mkdir -p /var/lib/churn/bentoml /var/lib/churn/inference_log
chown -R bentoml:bentoml /var/lib/churn

# BentoML creates bentos/, models/, envs/ and tmp/ under $BENTOML_HOME at start-up when they
# are missing; on a read-only root filesystem that mkdir is what failed
# ("Read-only file system: '/home/bentoml/bentos'"). Created here, the image's default command
# (serve the packed Bento, BENTOML_HOME=/home/bentoml) starts with a read-only root too.
for dir in bentos models envs tmp; do
    mkdir -p "/home/bentoml/$dir"
done
chown -R bentoml:bentoml /home/bentoml
