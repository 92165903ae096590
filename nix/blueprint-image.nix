# The `nix` builder of k8shell blueprints: a compiled blueprint (the JSON that
# `k8shell blueprint show --json` prints) becomes a layered OCI image with
# `dockerTools.streamLayeredImage`, its packages taken from nixpkgs by attribute name.
#
#   nix build --impure --file nix/blueprint-image.nix --argstr specFile ./spec.json
#   ./result | skopeo copy docker-archive:/dev/stdin docker://registry/repo:tag
#
# `k8shell blueprint build --builder nix` does both. The blueprint's `base` is not used: the image
# is made from nixpkgs alone (the packages, a shell, coreutils and the user's files).
{ pkgs ? import <nixpkgs> { }
, specFile
, tag ? "latest"
}:
let
  inherit (pkgs) lib;
  spec = builtins.fromJSON (builtins.readFile specFile);
  user = spec.user;
  home = "/home/${user.name}";

  # nixpkgs attribute names such as "go" or "python3Packages.pip".
  package = name:
    lib.attrByPath (lib.splitString "." name)
      (throw "blueprint ${spec.name}: package `${name}` is not an attribute of nixpkgs")
      pkgs;
  packages = map package spec.packages;

  passwd = pkgs.writeTextDir "etc/passwd" ''
    root:x:0:0:root:/root:/bin/sh
    ${user.name}:x:${toString user.uid}:${toString user.gid}::${home}:${user.shell}
  '';
  group = pkgs.writeTextDir "etc/group" ''
    root:x:0:
    ${user.name}:x:${toString user.gid}:
  '';
  sudoers = lib.optional user.sudo (pkgs.writeTextDir "etc/sudoers.d/k8shell" ''
    ${user.name} ALL=(ALL) NOPASSWD:ALL
  '');
  files = lib.mapAttrsToList
    (path: file: pkgs.writeTextDir (lib.removePrefix "/" path) file.content)
    spec.files;
  # Modes and owners the store cannot carry are applied when the image is assembled.
  fileModes = lib.concatStringsSep "\n" (lib.mapAttrsToList
    (path: file:
      let owner = if file.owner == "user" then "${toString user.uid}:${toString user.gid}" else "0:0";
      in ''
        rm -f ".${path}" && cp "${pkgs.writeText "file" file.content}" ".${path}"
        chmod "$(printf '%o' ${toString file.mode})" ".${path}"
        chown ${owner} ".${path}"
      '')
    spec.files);
in
pkgs.dockerTools.streamLayeredImage {
  name = spec.name;
  inherit tag;
  contents = [ pkgs.bashInteractive pkgs.coreutils passwd group ] ++ sudoers ++ files ++ packages;
  fakeRootCommands = ''
    mkdir -p .${home} tmp
    chmod 1777 tmp
    chown ${toString user.uid}:${toString user.gid} .${home}
    ${fileModes}
  '';
  enableFakechroot = false;
  config = {
    User = "${toString user.uid}:${toString user.gid}";
    WorkingDir = home;
    Env = lib.mapAttrsToList (k: v: "${k}=${v}") ({ HOME = home; USER = user.name; SHELL = user.shell; } // spec.env);
    ExposedPorts = lib.listToAttrs (map (p: lib.nameValuePair "${toString p.port}/${p.protocol}" { }) spec.ports);
    Labels = spec.labels // {
      "dev.k8shell.blueprint.name" = spec.name;
      "dev.k8shell.builder" = "nix/1";
    };
  };
}
