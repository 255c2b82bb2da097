"""Beam's DaskRunner, corrected for multi-output ParDos, finish_bundle outputs, side inputs and sinks.

``--runner=DaskRunner`` selects this class (``pipeline.run.RUNNER_ALIASES``).
Beam 2.77's ``apache_beam.runners.dask.dask_runner.DaskRunner`` turns the
Beam graph into dask bags with four gaps that this pipeline hits:

1. It keys each bag by the transform that produced it, not by the output
   PCollection, and its bundle function strips the tags: a consumer of one
   output of ``ParDo(...).with_outputs(...)`` receives the elements of every
   output (an image reference reaches the failure counter:
   ``AttributeError: 'ImageRef' object has no attribute 'stage'``).
2. It collects a bundle's outputs before ``finish_bundle``, so what a DoFn
   emits there is lost: ``BatchElements`` and this pipeline's look-ahead
   batching emit their last batch there, and a small run segments nothing.
3. Each task computes its side inputs again, inside the task. File sinks
   take their temporary directory as a side input, so every bundle writes
   into a directory of its own and all but one are left behind.
4. It computes only the bag of the last transform visited, so branches that
   do not feed it (most of this pipeline's sinks) never run.

This subclass keeps Beam's translations for Create, GroupByKey and Flatten
and its options, client and result; it translates ParDo itself: outputs
keep their tags and ``finish_bundle`` outputs, each consumer of a
multi-output ParDo filters its own tag, side inputs are dask dependencies
computed once per run, every leaf bag is computed, and a worker process
keeps its set-up DoFns between partitions (Beam's workers do the same), so
a model is loaded once per worker, not once per partition.
"""

import collections
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import dask
from apache_beam import DoFn, ParDo, pvalue
from apache_beam.pipeline import PipelineVisitor
from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask.overrides import dask_overrides
from apache_beam.runners.dask.transform_evaluator import TRANSLATIONS, Flatten, NoOp, OneReceiver, get_windowed_value
from apache_beam.transforms.sideinputs import SideInputMap


def _concat(partitions: Iterable[Iterable[Any]]) -> list[Any]:
  return [element for partition in partitions for element in partition]


# Set-up DoFn instances waiting for their next bundle in this worker process, per (run, step): Beam's
# own workers reuse a DoFn across bundles, so setup() (a model load) runs once per instance, not per
# partition. A bundle takes an idle instance or sets up the one it was sent; one at a time, so threads
# of a worker never share an instance. A new run's first bundle tears the previous run's down.
_IDLE: collections.defaultdict[tuple[str, str], list[Any]] = collections.defaultdict(list)
_IDLE_RUN: list[str | None] = [None]
_IDLE_LOCK = threading.Lock()


def _take_dofn(run_id: str, label: str, fn: Any) -> tuple[Any, bool]:
  """(DoFn, needs_setup)."""
  with _IDLE_LOCK:
    if _IDLE_RUN[0] != run_id:
      stale = [instance for instances in _IDLE.values() for instance in instances]
      _IDLE.clear()
      _IDLE_RUN[0] = run_id
    else:
      stale = []
    idle = _IDLE[(run_id, label)]
    taken = (idle.pop(), False) if idle else (fn, True)
  for instance in stale:
    try:
      instance.teardown()
    except Exception:  # a previous run's leftovers; nothing to report to
      pass
  return taken


def _give_back_dofn(run_id: str, label: str, fn: Any) -> None:
  with _IDLE_LOCK:
    if _IDLE_RUN[0] == run_id:
      _IDLE[(run_id, label)].append(fn)
      return
  fn.teardown()


def _run_bundle(
  elements: Iterable[Any],
  fn: Any,
  label: str,
  run_id: str,
  window_fn: Any,
  args: Sequence[Any],
  kwargs: dict[str, Any],
  side_specs: Sequence[tuple[Any, Any, Any]],
  *side_values: Iterable[Any],
) -> list[Any]:
  """One dask partition through a DoFn: main outputs as values, tagged ones as ``TaggedOutput(tag, value)``."""
  fn, needs_setup = _take_dofn(run_id, label, fn)
  receivers = OneReceiver()
  side_inputs = [
    SideInputMap(view_class, view_options, [get_windowed_value(value, mapping_fn) for value in values])
    for (view_class, view_options, mapping_fn), values in zip(side_specs, side_values)
  ]
  handler = _OutputHandler(
    window_fn=window_fn,
    main_receivers=receivers[None],
    tagged_receivers=receivers,
    per_element_output_counter=None,
    output_batch_converter=None,
    process_yields_batches=False,
    process_batch_yields_elements=False,
  )
  invoker = DoFnInvoker.create_invoker(
    DoFnSignature(fn),
    handler,
    context=DoFnContext(label, state=None),
    side_inputs=side_inputs,
    input_args=list(args),
    input_kwargs=kwargs,
    user_state_context=None,
    bundle_finalizer_param=DoFn.BundleFinalizerParam(),
  )
  if needs_setup:
    invoker.invoke_setup()
  try:
    invoker.invoke_start_bundle()
    for element in elements:
      invoker.invoke_process(get_windowed_value(element, window_fn))
    invoker.invoke_finish_bundle()
  except BaseException:
    invoker.invoke_teardown()  # a failed instance is not reused
    raise
  _give_back_dofn(run_id, label, fn)
  outputs = []
  for output in receivers.values:
    if isinstance(output, pvalue.TaggedOutput):
      outputs.append(pvalue.TaggedOutput(output.tag, output.value.value))
    else:
      outputs.append(output.value)
  return outputs


class _OfTag:
  """Keeps the elements a multi-output ParDo sent to one tag (``None`` is the main output)."""

  def __init__(self, tag: str | None) -> None:
    self.tag = tag

  def __call__(self, element: Any) -> bool:
    if isinstance(element, pvalue.TaggedOutput):
      return element.tag == self.tag
    return self.tag is None


def _untag(element: Any) -> Any:
  return element.value if isinstance(element, pvalue.TaggedOutput) else element


class _TagRoutingVisitor(PipelineVisitor):
  """Translates each primitive transform to a dask bag; inputs are looked up per PCollection."""

  def __init__(self, bag_kwargs: dict[str, Any]) -> None:
    self.bag_kwargs = bag_kwargs
    self.run_id = uuid.uuid4().hex
    self.bags: collections.OrderedDict[Any, Any] = collections.OrderedDict()
    self.consumed: set[Any] = set()

  def _bag(self, pcoll: Any) -> Any:
    producer = pcoll.producer
    self.consumed.add(producer)
    bag = self.bags.get(producer)
    if bag is not None and len(producer.outputs) > 1:
      bag = bag.filter(_OfTag(pcoll.tag)).map(_untag)
    return bag

  def _par_do(self, node: Any, input_bag: Any) -> Any:
    transform = node.transform
    args, kwargs = transform.raw_side_inputs
    main_input = next(iter(node.main_inputs.values()))
    window_fn = main_input.windowing.windowfn if hasattr(main_input, "windowing") else None
    specs, values = [], []
    for side in node.side_inputs:
      specs.append((type(side), side._view_options(), side._window_mapping_fn))
      # One delayed per side input over the bag's own partition keys: computed once per run and shared by
      # every task that reads it (a bag reduction gets fused into, and recomputed by, each consumer).
      values.append(dask.delayed(_concat)(self._bag(side.pvalue).to_delayed(optimize_graph=False)))
    return input_bag.map_partitions(
      _run_bundle, transform.fn, node.full_label, self.run_id, window_fn, args, kwargs, specs, *values
    )

  def visit_transform(self, transform_node: Any) -> None:
    pcolls = [value for value in transform_node.inputs if not isinstance(value, pvalue.PBegin)]
    inputs = [bag for bag in map(self._bag, pcolls) if bag is not None]
    # Exact class, as Beam's translation table: the GroupAlsoByWindow ParDo of its GroupByKey expansion
    # stays an identity, because its GroupByKey already yields (key, values) in the global window.
    if transform_node.transform.__class__ is ParDo:
      self.bags[transform_node] = self._par_do(transform_node, inputs[0])
      return
    op = TRANSLATIONS.get(transform_node.transform.__class__, NoOp)(transform_node, bag_kwargs=self.bag_kwargs)
    if not pcolls:  # a root (Create): no input bag
      input_bag = None
    elif isinstance(op, Flatten) or len(inputs) != 1:
      input_bag = inputs
    else:
      input_bag = inputs[0]
    self.bags[transform_node] = op.apply(input_bag=input_bag, side_inputs=None)

  def leaves(self) -> list[Any]:
    return [bag for node, bag in self.bags.items() if node not in self.consumed]


class DaskRunner(beam_dask.DaskRunner):
  """Runs the pipeline on a dask.distributed cluster (``--dask_client_address``), every sink included."""

  def run_pipeline(self, pipeline: Any, options: Any) -> Any:
    import dask.distributed  # only a Dask run needs the client

    dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(drop_default=True, current_only=True)
    bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
    client = dask.distributed.Client(**dask_options)
    pipeline.replace_all(dask_overrides())
    visitor = _TagRoutingVisitor(bag_kwargs)
    pipeline.visit(visitor)
    futures = client.compute(visitor.leaves(), optimize_graph=False)
    return beam_dask.DaskRunnerResult(client, futures)
