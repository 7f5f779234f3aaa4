#!/bin/sh
# The one renderer of the deploy/nginx.conf template, used by deploy/local-stack.sh (nginx
# on loopback), the nginx service of docker-compose.yml (at container start) and
# deploy/check.sh (`nginx -t`), so all three run the same configuration.
#
#   render-nginx-conf.sh PREFIX LISTEN INSTANCE_1 INSTANCE_2 INSTANCE_3
#
# writes PREFIX/nginx.conf with the placeholders __LISTEN__ and __INSTANCE_1__..3__
# replaced, and creates PREFIX/logs and PREFIX/tmp, where the template's relative paths
# point. Then: nginx -p PREFIX/ -c PREFIX/nginx.conf
#   LISTEN       what nginx listens on: PORT or HOST:PORT (e.g. 8080, 127.0.0.1:8088)
#   INSTANCE_N   HOST:PORT of a wx-jssdk instance (e.g. 127.0.0.1:18081, wx-jssdk-1:8080)
# The template is the nginx.conf beside this script, or $NGINX_TEMPLATE.
#
# POSIX sh and sed only: it also runs inside the nginx:alpine image (busybox).
set -eu

die() {
  echo "render-nginx-conf: $*" >&2
  exit 1
}

[ "$#" -eq 5 ] || die "usage: $0 PREFIX LISTEN INSTANCE_1 INSTANCE_2 INSTANCE_3 (got $# arguments)"
prefix=$1
shift
template=${NGINX_TEMPLATE:-$(dirname "$0")/nginx.conf}
[ -r "$template" ] || die "cannot read the template $template"

# Addresses only: anything else (a space, `;`, or sed's `|`, `&`, `\`) would either break
# the substitution or smuggle directives into the configuration.
for value in "$@"; do
  case $value in
    '' | *[!]A-Za-z0-9._:[-]*) die "'$value' is not a PORT or HOST:PORT" ;;
  esac
done

mkdir -p "$prefix/logs" "$prefix/tmp"
out=$prefix/nginx.conf
sed -e "s|__LISTEN__|$1|g" \
  -e "s|__INSTANCE_1__|$2|g" \
  -e "s|__INSTANCE_2__|$3|g" \
  -e "s|__INSTANCE_3__|$4|g" \
  "$template" >"$out.tmp"
# A placeholder the template gained without this script learning about it.
if grep -n '__[A-Z0-9_]*__' "$out.tmp" >&2; then
  rm -f "$out.tmp"
  die "placeholders left unreplaced in $out (see above)"
fi
mv "$out.tmp" "$out"
