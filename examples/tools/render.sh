#!/bin/sh
# render.sh VERSION OUT - the demo's "compiler": turns site/*.md into HTML pages,
# writes a text banner, an index, a checksum list and the launcher script.
set -eu
version=$1
out=$2
mkdir -p "$out/www" "$out/bin"

# Minimal markdown: "# title" becomes <h1>, every other non-empty line a <p>.
for md in site/*.md; do
  name=$(basename "$md" .md)
  {
    echo "<!doctype html><html><head><meta charset=utf-8><title>$name</title></head><body>"
    sed -e 's/&/\&amp;/g; s/</\&lt;/g; s/>/\&gt;/g' \
        -e 's|^# \(.*\)|<h1>\1</h1>|' \
        -e '/^<h1>/!{/^$/!s|.*|<p>&</p>|}' "$md"
    echo "<footer>kiln-demo $version</footer></body></html>"
  } > "$out/www/$name.html"
  # The banner is the first heading of every page, as plain text.
  sed -n 's/^# //p' "$md" | head -n 1 >> "$out/www/banner.txt"
done
pages=$(ls site/*.md | wc -l)
echo "kiln-demo $version: $pages pages" >> "$out/www/banner.txt"
(cd "$out/www" && sha256sum *.html banner.txt > ../checksums.sha256)

cat > "$out/bin/kiln-demo" <<'LAUNCHER'
#!/bin/sh
# kiln-demo greet|serve|check - the demo image's entrypoint.
set -eu
home=${APP_HOME:-/app}
case "${1:-greet}" in
  greet)
    cat "$home/www/banner.txt"
    echo "running as $(id -un) (uid $(id -u)) in $(pwd)"
    cd "$home/www" && sha256sum -c -s ../checksums.sha256 && echo "site checksums: OK"
    ;;
  serve)
    echo "serving $home/www on port ${PORT:-8080}"
    exec httpd -f -p "${PORT:-8080}" -h "$home/www"
    ;;
  check)
    cd "$home/www" && sha256sum -c -s ../checksums.sha256
    # Only probe HTTP when the server is running in this container.
    if pidof httpd >/dev/null 2>&1; then
      wget -q -O /dev/null "http://127.0.0.1:${PORT:-8080}/index.html"
    fi
    ;;
  *)
    echo "usage: kiln-demo greet|serve|check" >&2
    exit 2
    ;;
esac
LAUNCHER
chmod 0755 "$out/bin/kiln-demo"
echo "rendered $pages pages into $out"
