#!/usr/bin/env bash
# System (Debian) packages the TEST SUITE needs beyond what .venv gets from PyPI.
#
# * The test camera (tests/camera/rtsp_camera.py) is GStreamer's RTSP server, driven
#   through GObject introspection; those bindings only import under the system
#   interpreter /usr/bin/python3, so they come from apt, not PyPI:
#   gir1.2-gst-rtsp-server-1.0 + python3-gi (the server and the bindings),
#   plugins-base (videotestsrc, audiotestsrc, opus), -good (RTP payloaders, alaw),
#   -ugly (x264enc), -bad (x265enc, voaacenc), gstreamer1.0-x (timeoverlay),
#   gstreamer1.0-tools (gst-launch/gst-inspect, for debugging a pipeline).
# * ffmpeg gives ffprobe and ffplay, which tests use to check recorded clips.
# * fonts-dejavu-core gives DejaVu Sans Mono, the font retrieval/watermark.py draws
#   the watermark with (through the FFmpeg binary of the imageio-ffmpeg wheel).
#
# Production recorders do NOT need any of this: they read real cameras with PyAV
# (its wheels bundle FFmpeg). Hosts that make watermarked exports need
# fonts-dejavu-core. `make test` runs this; `make run` does not.
#
# Fast and quiet when everything is installed. Otherwise installs what is missing
# with apt-get, as root or through passwordless sudo; failing that, it says what to
# run and exits 1.
set -euo pipefail

PACKAGES=(
    gir1.2-gst-rtsp-server-1.0
    python3-gi
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-plugins-ugly
    gstreamer1.0-plugins-bad
    gstreamer1.0-x
    gstreamer1.0-tools
    ffmpeg
    fonts-dejavu-core
)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ "$status" != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} > 0)); then
    install_cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${missing[*]}"
    if [[ $(id -u) -eq 0 ]]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo=(sudo -n)
    else
        echo "system-deps: missing Debian packages: ${missing[*]}" >&2
        echo "system-deps: the tests need them; install them as root with:" >&2
        echo "    sudo sh -c '$install_cmd'" >&2
        exit 1
    fi
    echo "system-deps: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
fi

# The packages being there is not enough: check what the tests actually use.
if ! out=$(/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); \
from gi.repository import GstRtspServer" 2>&1); then
    echo "system-deps: GStreamer's RTSP server does not import under /usr/bin/python3:" >&2
    echo "$out" >&2
    exit 1
fi
if ! out=$(ffprobe -version 2>&1); then
    echo "system-deps: ffprobe does not run:" >&2
    echo "$out" >&2
    exit 1
fi
watermark_font=/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf
if [[ ! -f "$watermark_font" ]]; then
    echo "system-deps: $watermark_font (fonts-dejavu-core) is missing" >&2
    exit 1
fi
