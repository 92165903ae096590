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
  # The blueprint's hash (a label, as the oci builder sets it).
, hash ? ""
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
  # sudo needs a setuid binary, which the store cannot hold: `k8shell blueprint build` refuses
  # `user.sudo = true` with this builder.
  # The blueprint's files, with modes and owners the store cannot carry, are put in place when
  # the image is assembled.
  fileCommands = lib.concatStringsSep "\n" (lib.mapAttrsToList
    (path: file:
      let
        owner = if file.owner == "user" then "${toString user.uid}:${toString user.gid}" else "0:0";
        target = lib.escapeShellArg ".${path}";
      in ''
        mkdir -p "$(dirname ${target})"
        rm -f ${target}
        cp ${pkgs.writeText "blueprint-file" file.content} ${target}
        chmod "$(printf '%o' ${toString file.mode})" ${target}
        chown ${owner} ${target}
      '')
    spec.files);
in
pkgs.dockerTools.streamLayeredImage {
  name = spec.name;
  inherit tag;
  contents = [ pkgs.bashInteractive pkgs.coreutils passwd group ] ++ packages;
  fakeRootCommands = ''
    mkdir -p .${home} tmp
    chmod 1777 tmp
    chown ${toString user.uid}:${toString user.gid} .${home}
    ${fileCommands}
  '';
  enableFakechroot = false;
  config = {
    User = "${toString user.uid}:${toString user.gid}";
    WorkingDir = home;
    Env = lib.mapAttrsToList (k: v: "${k}=${v}") ({ HOME = home; USER = user.name; SHELL = user.shell; } // spec.env);
    ExposedPorts = lib.listToAttrs (map (p: lib.nameValuePair "${toString p.port}/${p.protocol}" { }) spec.ports);
    Labels = spec.labels // {
      "dev.k8shell.blueprint.name" = spec.name;
      "dev.k8shell.blueprint.hash" = hash;
      "dev.k8shell.builder" = "nix/1";
    };
  };
}
