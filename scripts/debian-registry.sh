# Sourced (bash): Debian's package registry through a private apt
# configuration per suite and arch -- never the host's sources -- and the
# suite's current cloud kernel, cached in /var/cache/iomon-test/kernels.
# Used by scripts/vm-test (the kernel matrix) and scripts/vmlinux-h (the
# committed vmlinux headers). Needs $debarch (amd64, arm64).

kcache=/var/cache/iomon-test/kernels
mkdir -p "$kcache"

apt_private() { # suite -> prints the apt options
	local suite=$1
	local dir=$kcache/apt-$suite-$debarch
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	local sec="$suite-security"
	cat >"$dir/sources.list" <<-EOF
		deb [arch=$debarch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main
		deb [arch=$debarch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security $sec main
	EOF
	echo "-o Dir::Etc::SourceList=$dir/sources.list -o Dir::Etc::SourceParts=/dev/null" \
		"-o Dir::State::Lists=$dir/lists -o Dir::Cache=$dir/cache -o Dir::State::Status=/dev/null" \
		"-o APT::Architecture=$debarch -o APT::Architectures::=$debarch -o Debug::NoLocking=1" \
		"-o APT::Sandbox::User=root"
}

fetch_kernel() { # suite [flavour] -> the directory holding boot/ of the suite's current kernel
	# The flavour defaults to cloud-$debarch (NVMe and ext4 built in). Any
	# other (arm64-16k) also keeps lib/modules: its guest loads them from
	# an initramfs.
	local suite=$1
	local flavour=${2:-cloud-$debarch}
	local opts pkg deb dir
	opts=$(apt_private "$suite")
	# shellcheck disable=SC2086
	apt-get $opts update -qq >/dev/null
	# The metapackage names the current kernel of the suite.
	# shellcheck disable=SC2086
	pkg=$(apt-cache $opts depends "linux-image-$flavour" 2>/dev/null |
		sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$flavour\)\$/\1/p" | grep -v -- -unsigned | head -n 1)
	[ -n "$pkg" ] || { echo "vm-test: no $flavour kernel in $suite for $debarch" >&2; return 1; }
	dir=$kcache/$pkg
	# A cache from before extra/ (the loop driver) is fetched again.
	[ -d "$dir/extra" ] || rm -rf "$dir"
	if [ ! -d "$dir/boot" ]; then
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		# shellcheck disable=SC2086
		(cd "$dir.tmp" && apt-get $opts download "$pkg" >/dev/null 2>&1)
		deb=$(ls "$dir.tmp"/*.deb)
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir.tmp" ./boot
		# Every flavour: the loop driver (a module in Debian's kernels), for
		# a block device only the tests use.
		mkdir -p "$dir.tmp/x" "$dir.tmp/extra"
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir.tmp/x" --wildcards '*/drivers/block/loop.ko*' 2>/dev/null || true
		find "$dir.tmp/x" -name 'loop.ko*' -exec mv {} "$dir.tmp/extra/" \;
		rm -rf "$dir.tmp/x"
		if [ "$flavour" != "cloud-$debarch" ]; then
			# usr/lib/modules since trixie, lib/modules before.
			dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir.tmp" --wildcards './usr/lib/modules/*' './lib/modules/*' 2>/dev/null || true
			mkdir -p "$dir.tmp/modules"
			mv "$dir.tmp"/usr/lib/modules/*/kernel "$dir.tmp/modules/" 2>/dev/null ||
				mv "$dir.tmp"/lib/modules/*/kernel "$dir.tmp/modules/"
			rm -rf "$dir.tmp/usr" "$dir.tmp/lib"
		fi
		rm -f "$deb"
		mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}
