#!/usr/bin/env bash
# make-test-pki.sh: a throwaway PKI for trying and testing the broker's TLS and
# mutual TLS (docs/security-tls.md). NOT for production: the keys are
# unencrypted and the CA is made on this machine.
#
#   deploy/make-test-pki.sh OUTDIR [cn:ORG[:OU] ...]
#
# Writes to OUTDIR (EC P-256 keys, SHA-256, PEM; keys mode 0600):
#   ca.pem, ca.key            test CA "ICR Test CA" (10 years)
#   server.pem, server.key    the broker: CN=localhost, SAN DNS:localhost,
#                             IP:127.0.0.1, IP:::1 (serverAuth)
#   <cn>.pem, <cn>.key        a client certificate per principal: CN=<cn>,
#                             O=<ORG> (the ODS code), OU=<OU> if given
#                             (clientAuth). Default: the principals of
#                             deploy/policy/coventry-warwickshire.yaml:
#                             uhcw-epr:RKB uhcw-discharge:RKB swft-epr:RJC
#                             gp-system:M84001 cov-hsct:COV01
#                             cov-brokerage:COV01 wcc-brokerage:WCC01
#                             acorn-care:VN4X2 community-services:CWC01
#                             icb-analytics:QWU icr-operator:QWU
# and the certificates a broker must refuse:
#   expired.pem/.key          CN=uhcw-epr O=RKB by the test CA, valid only
#                             on 1 January 2020
#   rogue-ca.pem/.key         another CA, "ICR Rogue CA", that the broker
#   rogue-client.pem/.key     does not trust, and CN=uhcw-epr O=RKB by it
#   wrong-org.pem/.key        CN=cov-brokerage but O=RKB (the policy must
#                             refuse a principal claimed by another org)
#
# Idempotent: an existing CA (ca.pem + ca.key) is kept and existing files are
# not remade, so certificates already handed out stay valid; a new CA remakes
# everything. Needs only the openssl command (1.1.1 or 3.x). Takes well under
# a second per certificate. Tests run it into a temporary directory: never
# commit the keys it writes.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 2
fi
out="$1"
shift
if [ $# -gt 0 ]; then
  principals=("$@")
else
  # Keep in step with deploy/policy/coventry-warwickshire.yaml (CN = id,
  # O = organisation).
  principals=(uhcw-epr:RKB uhcw-discharge:RKB swft-epr:RJC gp-system:M84001
              cov-hsct:COV01 cov-brokerage:COV01 wcc-brokerage:WCC01
              acorn-care:VN4X2 community-services:CWC01 icb-analytics:QWU icr-operator:QWU)
fi
command -v openssl > /dev/null || { echo "make-test-pki: the openssl command is needed" >&2; exit 1; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

made=()
kept=()
fresh_ca=0

newkey() {  # newkey FILE
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2> /dev/null
  chmod 600 "$1"
}

# subject CN ORG [OU] -> "/CN=../O=../OU=.."
subject() {
  local s="/CN=$1"
  [ -n "${2:-}" ] && s="$s/O=$2"
  [ -n "${3:-}" ] && s="$s/OU=$3"
  printf '%s' "$s"
}

selfsigned_ca() {  # selfsigned_ca NAME CN
  local name="$1" cn="$2"
  newkey "$out/$name.key"
  cat > "$tmp/ca.ext" <<EXT
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EXT
  openssl req -new -x509 -key "$out/$name.key" -subj "/CN=$cn/O=ICR Test" -days 3650 \
    -sha256 -extensions v3_ca -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3_ca]\n%s\n' \
    "$(cat "$tmp/ca.ext")") -out "$out/$name.pem" 2> /dev/null
  chmod 644 "$out/$name.pem"
  made+=("$name.pem ($cn)")
}

# leaf NAME SUBJECT USAGE [SAN] [CA]: a certificate signed by CA (default ca)
leaf() {
  local name="$1" subj="$2" usage="$3" san="${4:-}" ca="${5:-ca}"
  if [ "$fresh_ca" -eq 0 ] && [ -s "$out/$name.pem" ] && [ -s "$out/$name.key" ]; then
    kept+=("$name.pem")
    return
  fi
  newkey "$out/$name.key"
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature"
    echo "extendedKeyUsage = $usage"
    echo "authorityKeyIdentifier = keyid"
    [ -n "$san" ] && echo "subjectAltName = $san"
  } > "$tmp/$name.ext"
  openssl req -new -key "$out/$name.key" -subj "$subj" -out "$tmp/$name.csr" 2> /dev/null
  openssl x509 -req -in "$tmp/$name.csr" -CA "$out/$ca.pem" -CAkey "$out/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$tmp/$name.ext" \
    -out "$out/$name.pem" 2> /dev/null
  chmod 644 "$out/$name.pem"
  made+=("$name.pem ($subj)")
}

# The certificate that expired: `openssl ca` is the one way in OpenSSL 3.0
# to set explicit validity dates (x509 -not_after came in 3.4).
expired() {
  if [ "$fresh_ca" -eq 0 ] && [ -s "$out/expired.pem" ] && [ -s "$out/expired.key" ]; then
    kept+=("expired.pem")
    return
  fi
  local dir="$tmp/throwaway-ca"
  mkdir -p "$dir"
  : > "$dir/index.txt"
  openssl rand -hex 16 > "$dir/serial"
  cat > "$dir/ca.cnf" <<CNF
[ ca ]
default_ca = throwaway
[ throwaway ]
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
x509_extensions = client
[ any ]
commonName = supplied
organizationName = optional
organizationalUnitName = optional
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
  newkey "$out/expired.key"
  openssl req -new -key "$out/expired.key" -subj "/CN=uhcw-epr/O=RKB" -out "$dir/expired.csr" \
    2> /dev/null
  openssl ca -batch -config "$dir/ca.cnf" -cert "$out/ca.pem" -keyfile "$out/ca.key" \
    -in "$dir/expired.csr" -out "$out/expired.pem" -notext \
    -startdate 20200101000000Z -enddate 20200102000000Z > /dev/null 2>&1
  chmod 644 "$out/expired.pem"
  made+=("expired.pem (/CN=uhcw-epr/O=RKB, expired 2 January 2020)")
}

if [ -s "$out/ca.pem" ] && [ -s "$out/ca.key" ]; then
  kept+=("ca.pem")
else
  fresh_ca=1
  selfsigned_ca ca "ICR Test CA"
fi

leaf server "$(subject localhost "ICR Broker")" serverAuth \
  "DNS:localhost, IP:127.0.0.1, IP:::1"
for p in "${principals[@]}"; do
  IFS=: read -r cn org ou <<< "$p"
  if [ -z "$cn" ] || [ -z "${org:-}" ]; then
    echo "make-test-pki: '$p' is not cn:ORG or cn:ORG:OU" >&2
    exit 2
  fi
  case "$cn" in
    *[!A-Za-z0-9._-]*) echo "make-test-pki: principal '$cn': letters, digits, . _ - only" >&2; exit 2 ;;
  esac
  leaf "$cn" "$(subject "$cn" "$org" "${ou:-}")" clientAuth
done
expired
if [ "$fresh_ca" -eq 1 ] || [ ! -s "$out/rogue-ca.pem" ] || [ ! -s "$out/rogue-ca.key" ]; then
  selfsigned_ca rogue-ca "ICR Rogue CA"
  rm -f "$out/rogue-client.pem"
else
  kept+=("rogue-ca.pem")
fi
leaf rogue-client "$(subject uhcw-epr RKB)" clientAuth "" rogue-ca
leaf wrong-org "$(subject cov-brokerage RKB)" clientAuth

echo "make-test-pki: in $out"
for m in "${made[@]}"; do echo "  made $m"; done
if [ ${#kept[@]} -gt 0 ]; then echo "  kept ${kept[*]}"; fi
