"""Sort the Kaggle "AffectNet in YOLO format" download into class folders: DATA/{train,val,test}/<class>/.

Usage:
    python src/organize_data.py --source ~/Downloads/archive.zip     # the Kaggle zip: extracted into DATA, then moved
    python src/organize_data.py --source PATH/TO/YOLO_format          # a folder (or one holding it) outside DATA: hard-linked
    python src/organize_data.py                                       # DATA itself or a download in it, else kagglehub's
    python src/organize_data.py --source PATH --dry-run               # show what would happen; change nothing

DATA is the config key data_path. Label id i goes to class_names[i]; the split valid/ becomes val/.
Images whose label is missing, empty, malformed or out of range, and images of a type train.py cannot
read (.webp, .tif, .tiff, .jpe: it reads .jpg .jpeg .png .gif .bmp), go to DATA/<split>/unclassified/, and
the reasons (and labels without an image) are appended to DATA/organize_log.csv. Nothing is overwritten: a
different file already holding a name gets the new one as NAME__1.jpg. Re-running is a no-op, and a run
that was killed resumes where it stopped. Folders outside DATA are hard-linked (copied where linking
fails) so they stay intact; --move or --link picks the mode yourself.

A download extracted as DATA itself (DATA/train/images/, DATA/valid/labels/, ...) is organized in place:
the images move into the class folders, the labels to DATA/yolo_labels/<split>/, and the emptied images/,
labels/ and valid/ folders are removed (an images/ folder still holding other files stays, with a
warning), so DATA holds what train.py reads and nothing else. A zip extracted into DATA/YOLO_format/, or
a folder elsewhere, keeps its labels where they are. A dry run on a zip reads the archive's member list
and labels: nothing is extracted.
"""
from __future__ import annotations

from emotion.common import cli


def parse_args(argv=None):
    parser = cli.parser(__doc__)
    parser.add_argument("--source", metavar="PATH",
                        help="the Kaggle zip, a YOLO_format folder, or a folder holding one "
                             "(default: data_path itself or one inside it, else a kagglehub download)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--move", dest="mode", action="store_const", const="move",
                      help="move the images (default for a zip or a folder inside data_path)")
    mode.add_argument("--link", dest="mode", action="store_const", const="link",
                      help="hard-link the images, copying where linking fails; the source stays intact "
                           "(default for a folder outside data_path)")
    parser.add_argument("--dry-run", action="store_true", help="show what would happen; change nothing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = cli.load_config(args)
    from emotion.data import organize  # after parsing: --help stays fast

    organize.run(cfg, args.source, args.mode, args.dry_run)
    return 0


if __name__ == "__main__":
    cli.run(main)
