"""Tests of capsjax.metric_writers: metrics.jsonl across an interrupted run."""
import json

from capsjax import metric_writers


def read(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_resume_drops_the_records_after_the_checkpoint(tmp_path):
  writer = metric_writers.MetricWriter(str(tmp_path))
  for step in (1, 2, 3):
    writer.write_scalars(step, 'train', {'loss': float(step)})
  writer.write_scalars(2, 'test', {'loss': 0.5})
  writer.close()
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 4, "split": "tr')  # cut short by a kill

  # Resumed from the checkpoint of step 2: step 3 will be trained again.
  writer = metric_writers.MetricWriter(str(tmp_path), resume_step=2)
  writer.write_scalars(3, 'train', {'loss': 3.5})
  writer.close()
  assert read(tmp_path / 'metrics.jsonl') == [
      {'step': 1, 'split': 'train', 'loss': 1.0},
      {'step': 2, 'split': 'train', 'loss': 2.0},
      {'step': 2, 'split': 'test', 'loss': 0.5},
      {'step': 3, 'split': 'train', 'loss': 3.5}]


def test_a_record_cut_before_its_newline_is_kept_apart(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text(
      '{"step": 1, "split": "train", "loss": 1.0}\n'
      '{"step": 2, "split": "train", "loss": 2.0}')
  writer = metric_writers.MetricWriter(str(tmp_path), resume_step=2)
  writer.write_scalars(3, 'train', {'loss': 3.0})
  writer.close()
  assert [r['step'] for r in read(tmp_path / 'metrics.jsonl')] == [1, 2, 3]


def test_a_fresh_start_keeps_nothing_of_a_lost_run(tmp_path):
  (tmp_path / 'metrics.jsonl').write_text('{"step": 5, "split": "train"}\n')
  metric_writers.MetricWriter(str(tmp_path), resume_step=0).close()
  assert read(tmp_path / 'metrics.jsonl') == []


def test_read_split_gives_each_step_of_a_split_once(tmp_path):
  assert metric_writers.read_split(str(tmp_path)) == []
  with open(tmp_path / 'metrics.jsonl', 'w') as f:
    f.write('{"step": 4, "split": "test", "accuracy": 0.5}\n'
            '{"step": 2, "split": "test", "accuracy": 0.25}\n'
            '{"step": 2, "split": "train", "loss": 1.0}\n'
            '{"step": 4, "split": "test", "accuracy": 0.75}\n'
            '{"step": 6, "split": "te')  # cut short by a kill
  assert metric_writers.read_split(str(tmp_path)) == [
      {'step': 2, 'accuracy': 0.25}, {'step': 4, 'accuracy': 0.75}]
  assert metric_writers.read_split(str(tmp_path), 'train') == [
      {'step': 2, 'loss': 1.0}]
