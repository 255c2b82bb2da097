"""--date templating of paths for nightly runs."""

import datetime

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.schedule import ScheduleOptions, fill_date_templates, fill_template, parse_date, yesterday_utc

UTC = datetime.timezone.utc


def test_fill_template_replaces_every_placeholder():
  day = datetime.date(2024, 3, 7)
  assert fill_template("gs://b/{yyyy}/{mm}/{dd}/*.png", day) == "gs://b/2024/03/07/*.png"
  assert fill_template("out/date={date}/run-{date}", day) == "out/date=2024-03-07/run-2024-03-07"
  assert fill_template("/plain/path/*.tif", day) == "/plain/path/*.tif"


def test_fill_template_rejects_typos_but_leaves_other_braces():
  with pytest.raises(ValueError, match=r"unknown placeholder \{yyy\}.*\{date\}, \{yyyy\}, \{mm\}, \{dd\}"):
    fill_template("gs://b/{yyy}/x", datetime.date(2024, 1, 1))
  json_value = '{"apache_beam":"WARNING"}'
  assert fill_template(json_value, datetime.date(2024, 1, 1)) == json_value
  assert fill_template("{YYYY}", datetime.date(2024, 1, 1)) == "{YYYY}"


def test_default_is_yesterday_in_utc_whatever_the_local_zone():
  just_after_midnight_utc = datetime.datetime(2024, 3, 1, 0, 5, tzinfo=UTC)
  assert yesterday_utc(just_after_midnight_utc) == datetime.date(2024, 2, 29)
  # 23:30 on 1 March in New York is already 2 March in UTC.
  new_york = datetime.timezone(datetime.timedelta(hours=-5))
  assert yesterday_utc(datetime.datetime(2024, 3, 1, 23, 30, tzinfo=new_york)) == datetime.date(2024, 3, 1)
  assert parse_date(None, just_after_midnight_utc) == datetime.date(2024, 2, 29)
  assert parse_date("", just_after_midnight_utc) == datetime.date(2024, 2, 29)
  assert yesterday_utc() == datetime.datetime.now(UTC).date() - datetime.timedelta(days=1)


@pytest.mark.parametrize("bad", ["2024-3-7", "20240307", "yesterday", "2024-02-30", "2024-13-01"])
def test_bad_dates_are_clear_errors(bad):
  with pytest.raises(ValueError, match=r"--date="):
    parse_date(bad)


def test_fill_date_templates_on_an_argument_list():
  argv = [
    "--input",
    "gs://in/{yyyy}/{mm}/{dd}/*.png",
    "--output=gs://out/{date}",
    "--date",
    "2023-12-31",
    "--job_name=segment-{date}",
    "--runner=DataflowRunner",
  ]
  assert fill_date_templates(argv) == [
    "--input",
    "gs://in/2023/12/31/*.png",
    "--output=gs://out/2023-12-31",
    "--job_name=segment-2023-12-31",
    "--runner=DataflowRunner",
    "--date=2023-12-31",
  ]


def test_fill_date_templates_defaults_to_yesterday_and_records_it():
  now = datetime.datetime(2025, 1, 1, 3, 0, tzinfo=UTC)
  filled = fill_date_templates(["--output=/data/{date}"], now=now)
  assert filled == ["--output=/data/2024-12-31", "--date=2024-12-31"]
  assert PipelineOptions(filled).view_as(ScheduleOptions).date == "2024-12-31"


def test_fill_date_templates_needs_a_value_for_date():
  with pytest.raises(ValueError, match="--date needs a value"):
    fill_date_templates(["--output=x", "--date"])
