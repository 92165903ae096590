# The Rust workspace built with crane: one dependency build shared by everything, a package per
# binary, and the checks CI runs (clippy, fmt, nextest against real PostgreSQL and NATS).
{ pkgs, craneLib, src }:
let
  inherit (pkgs) lib;

  # What the tests start (testkit finds them on PATH) and what scripts/setup installs on Debian.
  testComponents = [ pkgs.postgresql pkgs.nats-server pkgs.util-linux ];

  commonArgs = {
    src = craneLib.cleanCargoSource src;
    strictDeps = true;
    # protox compiles the .proto files in Rust: no protoc needed.
    nativeBuildInputs = [ ];
    buildInputs = [ ];
  };

  cargoArtifacts = craneLib.buildDepsOnly commonArgs;

  # Binaries of the workspace: { attribute = { crate = "crates/<dir>"; package = "<cargo package>"; }; }.
  # Each service issue adds its binary here.
  binaries = { };

  buildBinary = name: { package, ... }:
    craneLib.buildPackage (commonArgs // {
      inherit cargoArtifacts;
      pname = name;
      cargoExtraArgs = "-p ${package}";
      doCheck = false;
    });

  packages = lib.mapAttrs buildBinary binaries;

  checks = {
    clippy = craneLib.cargoClippy (commonArgs // {
      inherit cargoArtifacts;
      cargoClippyExtraArgs = "--workspace --all-targets --all-features -- --deny warnings";
    });
    fmt = craneLib.cargoFmt { inherit (commonArgs) src; };
    nextest = craneLib.cargoNextest (commonArgs // {
      inherit cargoArtifacts;
      nativeCheckInputs = testComponents;
      cargoNextestExtraArgs = "--workspace --no-fail-fast";
    });
  } // packages;
in
{
  inherit packages checks;

  devShell = craneLib.devShell {
    inherit checks;
    packages = testComponents ++ [ pkgs.cargo-nextest pkgs.nix ];
  };
}
