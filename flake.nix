# k8shell: packages, checks and the dev shell.
#
# Checked here: every .nix file parses (`nix-instantiate --parse`, run by scripts/test) and
# flake.lock is valid JSON. The development machines cannot fetch nixpkgs or crane, so
# `nix flake check` and `nix build` have not been run here; they are meant for machines with Nix
# and network access. The crane calls follow crane's documented API (mkLib, cleanCargoSource,
# buildDepsOnly, buildPackage, cargoClippy, cargoFmt, cargoNextest, devShell).
# flake.lock pins crane and nixpkgs revisions of September 2026 (nixpkgs of that time carries a
# rustc at least as new as the workspace's rust-version, 1.95); their hashes were copied from
# public locks, not computed here: `nix flake metadata` on a networked machine confirms them.
{
  description = "k8shell: developer workspaces on Kubernetes, reached over SSH, a browser console, a REST API and a CLI";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    crane.url = "github:ipetkov/crane";
  };

  outputs = { self, nixpkgs, crane }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system:
        f (import ./nix/packages.nix {
          pkgs = nixpkgs.legacyPackages.${system};
          craneLib = crane.mkLib nixpkgs.legacyPackages.${system};
          src = ./.;
        }));
    in
    {
      packages = forAllSystems (k8shell: k8shell.packages);
      apps = forAllSystems (k8shell: {
        up = { type = "app"; program = "${k8shell.up}/bin/k8shell-up"; };
      });
      checks = forAllSystems (k8shell: k8shell.checks);
      devShells = forAllSystems (k8shell: { default = k8shell.devShell; });
    };
}
