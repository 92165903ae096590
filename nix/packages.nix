# The Rust workspace built with crane: one dependency build shared by everything, a package per
# binary, and the checks CI runs (clippy, fmt, nextest against real PostgreSQL and NATS).
{ pkgs, craneLib, src }:
let
  inherit (pkgs) lib;

  # What the tests start (testkit finds them on PATH) and what scripts/setup installs on Debian.
  testComponents = [ pkgs.postgresql pkgs.nats-server pkgs.util-linux pkgs.openssh pkgs.asciinema ];

  # Rust sources plus what the crates read at compile time: protos (protox), SQL migrations
  # (sqlx::migrate!), the Rego bundle, the Nickel contract and examples (include_str!, tests), the
  # OpenID provider script of testkit and the blueprints' sample files.
  workspaceSource = lib.fileset.toSource {
    root = src;
    fileset = lib.fileset.unions [
      (craneLib.fileset.commonCargoSources src)
      (lib.fileset.fileFilter
        (file: lib.any file.hasExt [ "proto" "sql" "rego" "json" "ncl" "mjs" ])
        src)
      (src + "/blueprints/files")
    ];
  };

  # The web console (crates/console/web): npm packages from the committed lockfile (importNpmLock
  # reads its integrity hashes, so no extra hash is kept here), type-checked and built by Vite.
  # k8shell-api embeds the result (crates/console/build.rs reads K8SHELL_CONSOLE_DIST).
  consoleRoot = src + "/crates/console/web";
  console = pkgs.buildNpmPackage {
    pname = "k8shell-console";
    version = "0.1.0";
    src = lib.fileset.toSource {
      root = consoleRoot;
      fileset = lib.fileset.unions [
        (consoleRoot + "/package.json")
        (consoleRoot + "/package-lock.json")
        (consoleRoot + "/index.html")
        (consoleRoot + "/tsconfig.json")
        (consoleRoot + "/vite.config.ts")
        (consoleRoot + "/vitest.e2e.config.ts")
        (consoleRoot + "/src")
        (consoleRoot + "/e2e")
      ];
    };
    npmDeps = pkgs.importNpmLock { npmRoot = consoleRoot; };
    npmConfigHook = pkgs.importNpmLock.npmConfigHook;
    npmBuildScript = "build";
    # The unit tests run here too (jsdom, no browser).
    doCheck = true;
    checkPhase = "npx vitest run";
    installPhase = "cp -r dist $out";
  };

  commonArgs = {
    src = workspaceSource;
    K8SHELL_CONSOLE_DIST = console;
    strictDeps = true;
    # protox compiles the .proto files in Rust: no protoc needed.
    nativeBuildInputs = [ ];
    buildInputs = [ ];
  };

  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  # Binaries of the workspace: { attribute = { crate = "crates/<dir>"; package = "<cargo package>"; }; }.
  # Each service issue adds its binary here.
  binaries = {
    k8shelld = { crate = "crates/k8shelld"; package = "k8shell-k8shelld"; };
    k8shell-identity = { crate = "crates/identity"; package = "k8shell-identity"; };
    k8shell-authz = { crate = "crates/authz"; package = "k8shell-authz"; };
    k8shell-session = { crate = "crates/session"; package = "k8shell-session"; };
    k8shell-provisioner = { crate = "crates/provisioner"; package = "k8shell-provisioner"; };
    k8shell-ssh-proxy = { crate = "crates/ssh-proxy"; package = "k8shell-ssh-proxy"; };
    k8shell = { crate = "crates/cli"; package = "k8shell-cli"; };
    k8shell-allinone = { crate = "crates/allinone"; package = "k8shell-allinone"; };
  };

  buildBinary = name: { package, ... }:
    craneLib.buildPackage (commonArgs // {
      inherit cargoArtifacts;
      pname = name;
      cargoExtraArgs = "-p ${package}";
      doCheck = false;
    });

  packages = lib.mapAttrs buildBinary binaries // {
    inherit console;
    # Statically linked (glibc, crt-static, as scripts/test builds it), so that it runs in any
    # workspace image. An explicit target keeps build scripts and proc-macros dynamic.
    k8shelld-static = craneLib.buildPackage (commonArgs // {
      pname = "k8shelld-static";
      cargoExtraArgs = "-p k8shell-k8shelld --bin k8shelld";
      CARGO_BUILD_TARGET = pkgs.stdenv.hostPlatform.rust.rustcTarget;
      CARGO_BUILD_RUSTFLAGS = "-C target-feature=+crt-static";
      buildInputs = [ pkgs.glibc.static ];
      doCheck = false;
    });
  };

  checks = {
    clippy = craneLib.cargoClippy (commonArgs // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets --all-features -- --deny warnings";
    });
    fmt = craneLib.cargoFmt { inherit (commonArgs) src; };
    nextest = craneLib.cargoNextest (commonArgs // {
      inherit cargoArtifacts;
      nativeCheckInputs = testComponents;
      # The container tests need root (PID namespace, chroot) and a static k8shelld, the OpenID
      # tests the npm package oidc-provider, the image builds and the local runtime root (buildah,
      # runc, network namespaces), which the build sandbox has not, nor have the ssh-proxy's
      # end-to-end tests (workspaces under runc); scripts/test runs them.
      cargoNextestExtraArgs = "--workspace --no-fail-fast -E 'not test(/^container::/) and not test(/^oidc::/) and not binary(oci) and not test(build_pushes_once) and not (binary_id(k8shell-provisioner::integration) and (test(/^local_runtime::/) or test(/^service::/))) and not binary_id(k8shell-ssh-proxy::integration) and not binary_id(k8shell-api-server::integration) and not binary_id(k8shell-cli::integration) and not binary_id(k8shell-e2e::story) and not binary_id(k8shell-e2e::console)'";
    });
  } // packages;
  # `nix run .#up`: the all-in-one platform with the machine's tools from nixpkgs, state in
  # ./.k8shell, as root (runc). The base image is Debian made by mmdebstrap when
  # the machine reaches a Debian mirror (`--base busybox` otherwise).
  up = pkgs.writeShellApplication {
    name = "k8shell-up";
    runtimeInputs = [
      pkgs.postgresql pkgs.nats-server pkgs.docker-distribution pkgs.buildah pkgs.skopeo
      pkgs.umoci pkgs.runc pkgs.iproute2 pkgs.nftables pkgs.util-linux pkgs.apacheHttpd
      pkgs.mmdebstrap pkgs.openssh
    ];
    text = ''
      args=(--state-dir "''${K8SHELL_STATE_DIR:-$PWD/.k8shell}" --k8shelld ${packages.k8shelld-static}/bin/k8shelld)
      if [[ $(id -u) -eq 0 ]]; then
        exec ${packages.k8shell-allinone}/bin/k8shell-allinone "''${args[@]}" "$@"
      fi
      exec sudo env PATH="$PATH" ${packages.k8shell-allinone}/bin/k8shell-allinone "''${args[@]}" "$@"
    '';
  };
in
{
  inherit packages checks up;

  devShell = craneLib.devShell {
    inherit checks;
    packages = testComponents ++ [ pkgs.cargo-nextest pkgs.nix pkgs.nodejs pkgs.busybox ];
  };
}
