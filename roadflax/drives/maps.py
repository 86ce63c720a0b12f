"""A drive's segments on the map: GeoJSON and an HTML map (folium, Leaflet).

Each segment is the GPS track from its start to its end, a LineString in the
segment's class colour. The GeoJSON's properties follow the simplestyle
convention (`stroke`), so GitHub and geojson.io draw it coloured too; the
HTML map draws the whole track in grey beneath the segments, with a legend
and a popup per segment. The map's page loads Leaflet and the OpenStreetMap
tiles in the browser that opens it; writing it downloads nothing.
"""

import html
import json
from typing import Sequence

import folium
import numpy as np

from roadflax.drives import gpx
from roadflax.drives.segments import Segment
from roadflax.files import atomic_write_text


def segments_geojson(
    segments: Sequence[Segment],
    lines: Sequence[np.ndarray],
    colours: dict[str, str],
    start: float,
    source: str,
) -> dict:
  """A FeatureCollection of one LineString per segment with a line.

  Args:
    segments: the drive's segments.
    lines: each segment's positions, float [K, 2] latitude and longitude
      (`gpx.Track.path`); a segment with fewer than two (off the track) is
      left out.
    colours: a colour per class.
    start: when the video started, seconds since the epoch.
    source: the video, named in the collection's properties.
  """
  features = []
  for segment, line in zip(segments, lines):
    if len(line) < 2:
      continue
    features.append({
        "type": "Feature",
        "geometry": {
            "type": "LineString",
            "coordinates": [
                [round(lon, 7), round(lat, 7)] for lat, lon in line.tolist()
            ],
        },
        "properties": {
            "class": segment.class_name,
            "colour": colours[segment.class_name],
            "stroke": colours[segment.class_name],
            "stroke-width": 4,
            "start_s": round(segment.start_s, 3),
            "end_s": round(segment.end_s, 3),
            "start_time": gpx.utc(start + segment.start_s),
            "end_time": gpx.utc(start + segment.end_s),
            "samples": segment.samples,
            "mean_confidence": round(segment.mean_confidence, 4),
        },
    })
  return {
      "type": "FeatureCollection",
      "properties": {"source": source},
      "features": features,
  }


def write_geojson(collection: dict, path: str) -> None:
  atomic_write_text(path, json.dumps(collection) + "\n")


def map_html(collection: dict, track: gpx.Track, title: str) -> str:
  """The HTML page of a map of `collection` (`segments_geojson`) over the
  whole `track`."""
  whole = np.stack([track.latitudes, track.longitudes], axis=1).tolist()
  page = folium.Map(tiles="OpenStreetMap", control_scale=True)
  folium.PolyLine(whole, color="grey", weight=3, opacity=0.6).add_to(page)
  for feature in collection["features"]:
    p = feature["properties"]
    text = (
        f"<b>{html.escape(p['class'])}</b><br>{p['start_s']:.1f} to"
        f" {p['end_s']:.1f} s ({p['start_time']} to {p['end_time']})<br>"
        f"{p['samples']} samples, mean confidence {p['mean_confidence']:.2f}"
    )
    folium.PolyLine(
        [[lat, lon] for lon, lat in feature["geometry"]["coordinates"]],
        color=p["colour"],
        weight=7,
        opacity=0.9,
        tooltip=html.escape(p["class"]),
        popup=folium.Popup(text, max_width=320),
    ).add_to(page)
  page.fit_bounds([
      [min(track.latitudes), min(track.longitudes)],
      [max(track.latitudes), max(track.longitudes)],
  ])
  page.get_root().html.add_child(folium.Element(_legend(collection, title)))
  return page.get_root().render()


def _legend(collection: dict, title: str) -> str:
  """A box in the map's corner: the title and the colour of each class."""
  colours = {}
  for feature in collection["features"]:
    colours.setdefault(
        feature["properties"]["class"], feature["properties"]["colour"]
    )
  rows = "".join(
      '<div><span style="display:inline-block;width:14px;height:14px;'
      f'background:{colour};margin-right:6px;vertical-align:middle"></span>'
      f"{html.escape(name)}</div>"
      for name, colour in colours.items()
  )
  return (
      '<div style="position:fixed;bottom:24px;left:12px;z-index:9999;'
      "background:white;padding:8px 10px;border-radius:4px;"
      'box-shadow:0 1px 4px rgba(0,0,0,.3);font:13px sans-serif">'
      f"<b>{html.escape(title)}</b>{rows}</div>"
  )


def write_map_html(
    collection: dict, track: gpx.Track, title: str, path: str
) -> None:
  """`map_html` as a file."""
  atomic_write_text(path, map_html(collection, track, title))
