# Build and install wgd and wgctl with their man pages, service files and
# shell completions.
#
#   make                          # cargo build --release of wgd and wgctl
#   make install                  # as root; PREFIX=/usr/local by default
#   make install PREFIX=/usr      # what a distribution package does
#   make install DESTDIR=/tmp/pkg PREFIX=/usr   # staged, for packaging
#   make uninstall [DESTDIR=...] [PREFIX=...]   # the same variables
#
# install does not build (so that `sudo make install` does not run cargo
# as root): run `make` first. PROFILE=debug installs target/debug's
# binaries instead (the tests do; those carry wgd's test hooks, which stay
# inert unless WGD_TEST_HOOKS is set).
#
# The service files name the binaries by their installed paths: wgd@.service
# and the rc script are rewritten for SBINDIR and BINDIR as they are
# installed. The rc script and its defaults go under SYSCONFDIR (/etc, not
# under PREFIX); the defaults file is not overwritten if it exists, and
# uninstall removes it only if it is unchanged. tests/tests/service.rs
# installs into a DESTDIR, checks the list of files, runs the installed
# binaries and uninstalls.

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SBINDIR ?= $(PREFIX)/sbin
MANDIR ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSUSERSDIR ?= $(PREFIX)/lib/sysusers.d
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

CARGO ?= cargo
PROFILE ?= release
TARGETDIR ?= target/$(PROFILE)
INSTALL ?= install

WGD := $(TARGETDIR)/wgd
WGCTL := $(TARGETDIR)/wgctl

.PHONY: all build install uninstall check-built

all: build

# Only the two binaries: building the workspace would also turn on wgd's
# test hooks (the test crate asks for them).
build:
ifeq ($(PROFILE),release)
	$(CARGO) build --release --locked -p wgd -p wgctl
else
	$(CARGO) build --profile $(PROFILE) --locked -p wgd -p wgctl
endif

check-built:
	@for b in $(WGD) $(WGCTL); do \
		if [ ! -x "$$b" ]; then \
			echo "$$b is missing: run make (or make PROFILE=$(PROFILE)) first" >&2; \
			exit 1; \
		fi; \
	done

install: check-built
	$(INSTALL) -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 0755 $(WGD) $(DESTDIR)$(SBINDIR)/wgd
	$(INSTALL) -m 0755 $(WGCTL) $(DESTDIR)$(BINDIR)/wgctl
	$(INSTALL) -d $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5
	$(INSTALL) -m 0644 man/wgd.8 man/wgctl.8 $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 0644 man/wgd.conf.5 $(DESTDIR)$(MANDIR)/man5/
	$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR) $(DESTDIR)$(SYSUSERSDIR)
	sed -e 's|/usr/sbin/wgd|$(SBINDIR)/wgd|g' -e 's|/usr/bin/wgctl|$(BINDIR)/wgctl|g' \
		dist/systemd/wgd@.service > $(DESTDIR)$(SYSTEMDUNITDIR)/wgd@.service
	chmod 0644 $(DESTDIR)$(SYSTEMDUNITDIR)/wgd@.service
	$(INSTALL) -m 0644 dist/sysusers.d/wgd.conf $(DESTDIR)$(SYSUSERSDIR)/wgd.conf
	$(INSTALL) -d $(DESTDIR)$(SYSCONFDIR)/init.d $(DESTDIR)$(SYSCONFDIR)/default
	sed -e 's|^DAEMON=/usr/sbin/wgd$$|DAEMON=$(SBINDIR)/wgd|' -e 's|^WGCTL=/usr/bin/wgctl$$|WGCTL=$(BINDIR)/wgctl|' \
		dist/rc.d/wgd > $(DESTDIR)$(SYSCONFDIR)/init.d/wgd
	chmod 0755 $(DESTDIR)$(SYSCONFDIR)/init.d/wgd
	[ -e $(DESTDIR)$(SYSCONFDIR)/default/wgd ] || \
		$(INSTALL) -m 0644 dist/default/wgd $(DESTDIR)$(SYSCONFDIR)/default/wgd
	$(INSTALL) -d $(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	$(WGCTL) completions bash > $(DESTDIR)$(BASHCOMPDIR)/wgctl
	$(WGCTL) completions zsh > $(DESTDIR)$(ZSHCOMPDIR)/_wgctl
	$(WGCTL) completions fish > $(DESTDIR)$(FISHCOMPDIR)/wgctl.fish
	chmod 0644 $(DESTDIR)$(BASHCOMPDIR)/wgctl $(DESTDIR)$(ZSHCOMPDIR)/_wgctl \
		$(DESTDIR)$(FISHCOMPDIR)/wgctl.fish
	@echo "installed; as root, create the role users with: systemd-sysusers $(SYSUSERSDIR)/wgd.conf"

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/wgd $(DESTDIR)$(BINDIR)/wgctl
	rm -f $(DESTDIR)$(MANDIR)/man8/wgd.8 $(DESTDIR)$(MANDIR)/man8/wgctl.8
	rm -f $(DESTDIR)$(MANDIR)/man5/wgd.conf.5
	rm -f $(DESTDIR)$(SYSTEMDUNITDIR)/wgd@.service $(DESTDIR)$(SYSUSERSDIR)/wgd.conf
	rm -f $(DESTDIR)$(SYSCONFDIR)/init.d/wgd
	if cmp -s dist/default/wgd $(DESTDIR)$(SYSCONFDIR)/default/wgd; then \
		rm -f $(DESTDIR)$(SYSCONFDIR)/default/wgd; \
	fi
	rm -f $(DESTDIR)$(BASHCOMPDIR)/wgctl $(DESTDIR)$(ZSHCOMPDIR)/_wgctl \
		$(DESTDIR)$(FISHCOMPDIR)/wgctl.fish
