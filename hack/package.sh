#!/usr/bin/env bash
# Builds the release artifacts into dist/ from the release build the tests use (docs/install.md):
#   hack/package.sh            dist/bootstrap-runc_<v>_amd64.deb, bootstrap-runc-<v>-1.x86_64.rpm,
#                              bootstrap-runc.raw (systemd-sysext) and bootstrap-runc-<v>-x86_64.tar.gz
#   hack/package.sh tree DIR   only the built tree that every installer takes (packaging/install.sh
#                              as DIR/install.sh, the binaries, man pages, completions, units, docs)
# BIN_DIR=dir: binaries already built, examples/manuals beside them (default: hack/build.sh, then
# target/release). DIST=dir: where the artifacts go (default dist/). VERSION=v: another version
# than Cargo.toml's (the upgrade test builds N+1); `bootstrap-runc --version` still says Cargo's.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022 # the staged trees' modes are the packages' modes


version=${VERSION:-$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)}
# Reproducible: every timestamp is the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

binaries() {
  bin_dir=${BIN_DIR:-}
  if [ -z "$bin_dir" ]; then
    hack/install-deps.sh
    hack/build.sh
    bin_dir=target/release
  fi
  bin_dir=$(realpath "$bin_dir")
  for built in bootstrap-runc bootstrap-supervisor examples/manuals; do
    [ -x "$bin_dir/$built" ] || { echo "package.sh: no $bin_dir/$built (hack/build.sh builds it)" >&2; exit 1; }
  done
}

tree() { # DIR: the tree install.sh installs from
  local dir=$1
  rm -rf "$dir"
  mkdir -p "$dir/bin"
  install -m 0755 "$bin_dir/bootstrap-runc" "$bin_dir/bootstrap-supervisor" "$dir/bin/"
  "$bin_dir/examples/manuals" "$dir"
  install -m 0755 packaging/install.sh "$dir/install.sh"
  mkdir -p "$dir/packaging"
  cp -r packaging/systemd packaging/containerd packaging/examples "$dir/packaging/"
  install -m 0644 README.md "$dir/README.md"
  mkdir -p "$dir/docs"
  install -m 0644 docs/*.md "$dir/docs/"
}

# A file list of a staged root: one line per path, directories with a trailing slash.
deb() { # STAGE TREE
  local stage=$1 tree=$2 doc=$1/usr/share/doc/bootstrap-runc
  ZSH_COMPLETIONS=share/zsh/vendor-completions DESTDIR=$stage "$tree/install.sh" /usr >/dev/null
  install -m 0644 packaging/debian/copyright "$doc/copyright"
  printf '%s\n' "bootstrap-runc ($version) unstable; urgency=medium" "" "  * Release $version." "" \
    " -- bootstrap-runc maintainers <bootstrap-runc@users.noreply.github.com>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")" |
    gzip -9n >"$doc/changelog.gz" # a native package's
  chmod 0644 "$doc/changelog.gz"
  # dpkg-shlibdeps reads the package's name from debian/control in the directory it runs in.
  local shlibs
  shlibs=$(mktemp -d)
  mkdir "$shlibs/debian"
  printf 'Source: bootstrap-runc\n\nPackage: bootstrap-runc\nArchitecture: amd64\n' >"$shlibs/debian/control"
  local depends
  depends=$(cd "$shlibs" && dpkg-shlibdeps -O "$stage/usr/lib/bootstrap-runc/bootstrap-runc" \
    "$stage/usr/lib/bootstrap-runc/bootstrap-supervisor" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  rm -rf "$shlibs"
  [ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
  mkdir -p "$stage/DEBIAN"
  sed -e "s/@VERSION@/$version/" -e "s/@DEPENDS@/$depends/" \
    -e "s/@INSTALLED_SIZE@/$(du -sk --exclude=DEBIAN "$stage" | cut -f1)/" \
    packaging/debian/control.in >"$stage/DEBIAN/control"
  install -m 0755 packaging/debian/{preinst,postinst,prerm,postrm} "$stage/DEBIAN/"
  # Hashed from stdin: md5sum escapes a name with a backslash (the mount unit's), dpkg wants it raw.
  (cd "$stage" && find usr -type f -print0 | sort -z | while IFS= read -r -d '' file; do
    printf '%s  %s\n' "$(md5sum <"$file" | cut -d' ' -f1)" "$file"
  done) >"$stage/DEBIAN/md5sums"
  find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  dpkg-deb --root-owner-group -Zxz --build "$stage" "$dist/bootstrap-runc_${version}_amd64.deb" >/dev/null
}

rpm_package() { # STAGE TREE
  local stage=$1 tree=$2 top
  DESTDIR=$stage "$tree/install.sh" /usr >/dev/null
  top=$(mktemp -d)
  sed -e "s/@VERSION@/$version/" packaging/rpm/bootstrap-runc.spec.in >"$top/bootstrap-runc.spec"
  # The file list: everything staged, directories of ours only.
  (cd "$stage" && find . -type d \( -path ./usr/lib/bootstrap-runc -o -path ./usr/share/bootstrap-runc \
    -o -path './usr/share/bootstrap-runc/*' -o -path ./usr/share/doc/bootstrap-runc -o -path './usr/share/doc/bootstrap-runc/*' \
    -o -path './usr/lib/systemd/system/*.d' \) -printf '%%dir /%P\n'
   find . ! -type d -printf '/%P\n') | sort >>"$top/bootstrap-runc.spec"
  rpmbuild --quiet -bb --buildroot "$top/root" --define "_topdir $top" --define "_rpmdir $dist" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "staged $stage" --define "__os_install_post %{nil}" --define "debug_package %{nil}" \
    --define "use_source_date_epoch_as_buildtime 1" --define "clamp_mtime_to_source_date_epoch 1" \
    --target x86_64 "$top/bootstrap-runc.spec" >/dev/null
  rm -rf "$top"
}

sysext() { # STAGE TREE: everything under /usr, the extension's release file, squashfs
  local stage=$1 tree=$2
  DESTDIR=$stage "$tree/install.sh" /usr >/dev/null
  # An extension cannot enable units in /etc: it ships what `systemctl enable` would link
  # (statically; Upholds= would start a failed target again and again).
  local units=$stage/usr/lib/systemd/system
  mkdir -p "$units/bootstrap-containers.target.requires" "$units/multi-user.target.wants"
  ln -s ../bootstrap-containers.service "$units/bootstrap-containers.target.requires/"
  ln -s ../bootstrap-containers.target "$units/multi-user.target.wants/"
  install -D -m 0644 /dev/stdin "$stage/usr/lib/extension-release.d/extension-release.bootstrap-runc" <<REL
ID=_any
ARCHITECTURE=x86-64
SYSEXT_VERSION_ID=$version
EXTENSION_RELOAD_MANAGER=1
REL
  rm -f "$dist/bootstrap-runc.raw"
  mksquashfs "$stage/usr" "$dist/bootstrap-runc.raw.tmp" -keep-as-directory -all-root -root-mode 0755 -noappend \
    -quiet >/dev/null
  mv "$dist/bootstrap-runc.raw.tmp" "$dist/bootstrap-runc.raw"
}

tarball() { # TREE
  local tree=$1 name=bootstrap-runc-$version-x86_64
  tar -C "$(dirname "$tree")" --transform "s#^$(basename "$tree")#$name#" --sort=name --owner=0 --group=0 \
    --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" -czf "$dist/$name.tar.gz" "$(basename "$tree")"
}

all() {
  binaries
  local missing=()
  for tool in dpkg-deb dpkg-shlibdeps rpmbuild mksquashfs; do command -v "$tool" >/dev/null || missing+=("$tool"); done
  [ ${#missing[@]} = 0 ] || { echo "package.sh: missing ${missing[*]} (hack/install-deps.sh installs them)" >&2; exit 1; }
  dist=$(realpath -m "${DIST:-dist}")
  mkdir -p "$dist"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  tree "$work/tree"
  deb "$work/deb" "$work/tree"
  rpm_package "$work/rpm" "$work/tree"
  sysext "$work/sysext" "$work/tree"
  tarball "$work/tree"
  (cd "$dist" && ls -l "bootstrap-runc_${version}_amd64.deb" "bootstrap-runc-$version-1.x86_64.rpm" \
    bootstrap-runc.raw "bootstrap-runc-$version-x86_64.tar.gz")
}

case ${1:-} in
  tree) [ -n "${2:-}" ] || { echo "usage: hack/package.sh tree DIR" >&2; exit 2; }; binaries; tree "$2" ;;
  '') all ;;
  *) echo "usage: hack/package.sh [tree DIR]" >&2; exit 2 ;;
esac
