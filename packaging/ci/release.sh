#!/usr/bin/env bash
# berth release steps for any CI: build and publish to staging, then, once
# someone approved (a Jenkins `input`, a GitLab manual job, a GitHub
# environment), promote the same bytes to production.
#
#   release.sh publish [APP_DIR]   build APP_DIR (default .), publish it to
#                                  $STAGING_CHANNEL, print NAME@VERSION+BUILD
#   release.sh promote RELEASE     promote RELEASE from $STAGING_CHANNEL to
#                                  $PRODUCTION_CHANNEL
#
# Environment: BERTH_REPO (the repository, required), BUILD_NUMBER or
# CI_PIPELINE_IID (the build number), PACKAGER (default: packager on PATH),
# OUT_DIR (default: out), STAGING_CHANNEL (default: staging),
# PRODUCTION_CHANNEL (default: production). Re-running a step that already
# happened changes nothing and succeeds.
set -euo pipefail

packager=${PACKAGER:-packager}
staging=${STAGING_CHANNEL:-staging}
production=${PRODUCTION_CHANNEL:-production}
: "${BERTH_REPO:?set BERTH_REPO to the berth repository (a directory or file:// URL)}"
export BERTH_REPO

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
    exit 2
}

case ${1:-} in
    publish)
        app=${2:-.}
        out=${OUT_DIR:-out}
        # `SHA256  PATH` on stdout; the summary goes to the log on stderr.
        artifact=$("$packager" build "$app" --out "$out" | awk '{print $2}')
        "$packager" publish "$artifact" --channel "$staging" >&2
        # webapp_1.4.2+173.tar.zst -> webapp@1.4.2+173 (names have no `_`).
        release=$(basename "$artifact" .tar.zst)
        echo "${release/_/@}"
        ;;
    promote)
        [ $# -eq 2 ] || usage
        "$packager" promote "$2" --from "$staging" --to "$production"
        ;;
    *)
        usage
        ;;
esac
