#!/bin/sh
# Build Mosquitto's password file from the MQTT_*_PASSWORD variables (from the environment, or from the
# .env file given as second argument). Passwords never appear on a command line: they are written to a
# private temporary file that `mosquitto_passwd -U` hashes in place.
#
#   usage: make-passwd.sh OUTPUT [ENV_FILE]
#   compose runs it as the one-shot `mqtt-users` service; by hand: sh mosquitto/make-passwd.sh mosquitto/passwd .env
set -eu

USERS="ingestor predictor trainer dashboard healthcheck"
PLACEHOLDERS=" changeme changethis secret password xxx "

out="${1:?usage: make-passwd.sh OUTPUT [ENV_FILE]}"
env_file="${2:-}"

# Read one variable from the .env file without executing it (last assignment wins, quotes stripped).
from_env_file() {
    sed -n "s/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}$1=//p" "$env_file" | tail -n 1 \
        | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/"
}

password_of() {
    var="MQTT_$(echo "$1" | tr '[:lower:]' '[:upper:]')_PASSWORD"
    if [ -n "$env_file" ]; then
        value="$(from_env_file "$var")"
    else
        eval "value=\${$var:-}"
    fi
    if [ -z "$value" ]; then
        echo "make-passwd: $var is not set" >&2
        return 1
    fi
    lowered="$(printf '%s' "$value" | tr '[:upper:]' '[:lower:]')"
    case "$PLACEHOLDERS" in
        *" $lowered "*) echo "make-passwd: $var is a placeholder; set a real password" >&2; return 1 ;;
    esac
    # The same password goes into SONGPOP_MQTT_URL (mqtt://user:password@host), so keep it URL-safe.
    case "$value" in
        *[!A-Za-z0-9._~-]*) echo "make-passwd: $var may only use letters, digits and . _ ~ -" >&2; return 1 ;;
    esac
    printf '%s' "$value"
}

if [ -n "$env_file" ] && [ ! -r "$env_file" ]; then
    echo "make-passwd: cannot read $env_file" >&2
    exit 1
fi

umask 077
mkdir -p "$(dirname "$out")"
plain="$(mktemp "$(dirname "$out")/.passwd.XXXXXX")"
trap 'rm -f "$plain"' EXIT
for user in $USERS; do
    password="$(password_of "$user")"
    printf '%s:%s\n' "$user" "$password" >> "$plain"
done
mosquitto_passwd -U "$plain"
mv "$plain" "$out"
trap - EXIT
# The broker drops root for the `mosquitto` user (uid 1883 in eclipse-mosquitto) before reading the file.
if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chown mosquitto "$out"
fi
chmod 0600 "$out"
echo "make-passwd: wrote $out for users: $USERS"
