"""`vislab data`: list, prepare, locate and preview the data sets of the manifest.

    vislab data list                      every set: kind, status, size, where it lives
    vislab data prepare NAME [--download] generate a generated set into the cache; for a download set,
                                          say exactly where its files go (or fetch them, only with
                                          --download); then read one item, so that corrupt files fail
                                          now; exit 0 when the set is ready, 1 when not yet
    vislab data path NAME                 print where the set lives
    vislab data show NAME [--out PNG] [--n N] [--seed S] [--split SPLIT]
                                          write a PNG grid of samples (masks overlaid) and print its path

Missing files raise vislab.data.MissingData, which `vislab` prints as one line (exit code 2).
Nothing is ever downloaded without --download.
"""
from __future__ import annotations

import argparse

from vislab.data import manifest
from vislab.training import positive_int


def cmd_list(args) -> int:
    rows = [("NAME", "KIND", "STATUS", "SIZE", "WHERE")]
    for e in manifest.ENTRIES:
        if e.kind == "on-the-fly":
            status = "on the fly"
        else:
            status = "ready" if e.present() else ("not built" if e.kind == "generated" else "missing")
        rows.append((e.name, e.kind, status, e.size.split(" (")[0].split(";")[0], str(e.location())))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4])
    print("\n`vislab data prepare NAME` builds a generated set or says where a download set's files go.")
    return 0


def describe(e: manifest.Entry) -> str:
    return "\n".join(f"  {key}: {value}" for key, value in (
        ("what", e.description), ("source", e.source), ("size", e.size), ("checksum", e.checksum),
        ("files", e.layout), ("expected at", e.location())))


DOWNLOADABLE = ("mnist", "cifar10", "pets", "dsprites")


def _download(name: str) -> None:
    """Fetch a download set into data_root(); only ever called for `prepare NAME --download`."""
    from vislab.data import dsprites
    from vislab.data.common import data_root

    root = str(data_root())
    if name == "mnist":
        from torchvision.datasets import MNIST
        MNIST(root, train=True, download=True)
    elif name == "cifar10":
        from torchvision.datasets import CIFAR10
        CIFAR10(root, train=True, download=True)
    elif name == "pets":
        from torchvision.datasets import OxfordIIITPet
        OxfordIIITPet(root, download=True)
    elif name == "dsprites":
        from torchvision.datasets.utils import download_url
        download_url(dsprites.OFFICIAL_URL, str(dsprites.official_file().parent), dsprites.OFFICIAL_NAME)
    else:
        raise ValueError(f"{name} cannot be downloaded by the kit")


def _read_a_little(name: str) -> None:
    """Read one item (or split) of a set, so that missing or corrupt files fail now, by name."""
    from vislab.data import cifar, folder, moving_mnist, multi_object, pets
    from vislab.data.mnist import mnist, mnist5k

    checks = {
        "mnist5k": lambda: mnist5k("train"),
        "mnist": lambda: mnist("test"),
        "cifar10": lambda: cifar.cifar10("test"),
        "moving-mnist": lambda: moving_mnist.MovingMNIST("train", n=1)[0],
        "multi-dsprites": lambda: multi_object.MultiObjectScenes("multi-dsprites", n=1)[0],
        "tetrominoes": lambda: multi_object.MultiObjectScenes("tetrominoes", n=1)[0],
        "pets": lambda: pets.oxford_pets("test")[0],
        "pets-synthetic": lambda: pets.pets_synthetic("test")[0],
        "shapes-folder": lambda: folder.image_folder(folder.fixture_root(), 16, preload=False),
        "clevrtex": lambda: multi_object.clevrtex("test")[0],
        "clevr-masks": lambda: multi_object.clevr_with_masks("test")[0],
    }
    if name in checks:
        checks[name]()


def cmd_prepare(args) -> int:
    from vislab.data import dsprites, multi_object, pets
    from vislab.data.common import data_root

    e = manifest.entry(args.name)
    if args.download and e.name not in DOWNLOADABLE:
        print(f"{e.name}: --download is not supported; get the files by hand:\n{describe(e)}")
        return 1
    if args.download:
        print(f"downloading {e.name} into {data_root()} ...", flush=True)
        _download(e.name)
    if e.name == "dsprites":
        dsprites.prepare()
    elif e.name == "pets-synthetic" and not e.present():
        pets.make_pets_fixture(pets.synthetic_root())
    elif e.name == "shapes-folder" and not e.present():
        from vislab.data.common import atomic_write
        from vislab.data.folder import fixture_root, make_folder_fixture
        with atomic_write(fixture_root()) as tmp:
            make_folder_fixture(tmp, per_class=40)
    elif e.name == "clevr-masks" and not e.present() and multi_object.clevr_masks_tfrecords().exists():
        count = multi_object.convert_clevr_with_masks(multi_object.clevr_masks_tfrecords(), e.location())
        print(f"converted {count:,} scenes of {multi_object.clevr_masks_tfrecords()} into {e.location()}")
    elif e.kind == "download" and not e.present():
        fetch = (f" (or run `vislab data prepare {e.name} --download` where downloads are allowed)"
                 if e.name in DOWNLOADABLE else "")
        print(f"{e.name} is not there yet; put its files here{fetch}:\n{describe(e)}")
        if e.name == "clevr-masks":
            print(f"Save {multi_object.CLEVR_MASKS_FILE} as {multi_object.clevr_masks_tfrecords()} and run "
                  f"this command again: it converts the file (once; TensorFlow is not needed).")
        return 1
    _read_a_little(e.name)
    if e.kind == "on-the-fly":
        print(f"{e.name} is generated on the fly (nothing to cache); it works.")
    else:
        print(f"{e.name} is ready at {e.location()}")
    return 0


def cmd_path(args) -> int:
    print(manifest.entry(args.name).location())
    return 0


def cmd_show(args) -> int:
    from vislab.data.show import show

    manifest.entry(args.name)  # an unknown name fails with the list of known ones
    print(show(args.name, args.out, n=args.n, seed=args.seed, split=args.split))
    return 0


def _known(name: str) -> str:
    try:
        return manifest.entry(name).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="list, prepare, locate and preview data sets", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    data_sub = p.add_subparsers(dest="data_command", required=True)

    q = data_sub.add_parser("list", help="every data set, its status and where it lives")
    q.set_defaults(run=cmd_list)

    q = data_sub.add_parser("prepare", help="generate a set, or say where to put (or --download) its files")
    q.add_argument("name", type=_known, help=", ".join(manifest.names()))
    q.add_argument("--download", action="store_true",
                   help="fetch a download set from the internet (never done without this flag)")
    q.set_defaults(run=cmd_prepare)

    q = data_sub.add_parser("path", help="print where a data set lives")
    q.add_argument("name", type=_known, help=", ".join(manifest.names()))
    q.set_defaults(run=cmd_path)

    q = data_sub.add_parser("show", help="write a PNG grid of samples and print its path")
    q.add_argument("name", type=_known, help=", ".join(manifest.names()))
    q.add_argument("--out", help="the .png to write, or a folder to write NAME.png into "
                                 "(default datasets/cache/show/NAME.png)")
    q.add_argument("--n", type=positive_int, default=16, help="number of samples (default 16)")
    q.add_argument("--seed", type=int, default=0, help="which samples (default 0)")
    q.add_argument("--split", help="the split to show (default: the training split)")
    q.set_defaults(run=cmd_show)
