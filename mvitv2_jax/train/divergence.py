"""The error of a diverged run: which checkpoint is still good, and the later ones moved aside."""

import os

import jax
import numpy as np

from mvitv2_jax.train import checkpointing
from mvitv2_jax.train import errors


def diverged(problem: str, first_bad_state: int, next_loss: dict[int, float],
             start_step: int, bound: float, ckpt: checkpointing.Checkpointer,
             workdir: str) -> errors.Diverged:
  """The error for a run whose state after `first_bad_state` updates is not usable.

  A checkpoint is named good only if its params are finite (checked at save) and gave
  a finite loss below `bound` at the next update (`next_loss`, known for the states of
  this process: the one it started from and those it saved). Saved states newer than
  the good one are moved to corrupt/, so a restart resumes there.

  Args:
    problem: what went wrong, e.g. 'Loss is nan at step 8'.
    first_bad_state: updates done by the first state known to be bad.
    next_loss: state (updates done) -> the loss of the update that followed it.
    start_step: the state this process started from.
    bound: the task's divergence bound on the loss.
    ckpt: the run's checkpointer.
    workdir: the run directory.

  Returns:
    The error to raise, with one line naming the good checkpoint or saying there is none.
  """
  good = -1
  if jax.process_index() == 0:
    candidates = [s for s, loss in next_loss.items()
                  if s < first_bad_state and np.isfinite(loss) and loss <= bound]
    while candidates and good < 0:
      step = max(candidates)
      candidates.remove(step)
      if step in ckpt.saved_steps() and ckpt.newest_good_step(below=step + 1) == step:
        good = step
    for step in ckpt.saved_steps():
      if step > good and step >= start_step:
        loss = next_loss.get(step)
        ckpt.quarantine_diverged(step, 'training from it diverged' if loss is None else
                                 f'its params gave a loss of {loss:.4g} at the next step')
  good = checkpointing.broadcast(good)
  states = os.path.join(workdir, checkpointing.CHECKPOINTS_DIR)
  if good < 0:
    older = (f'; the checkpoints from before step {start_step} were not checked'
             if start_step > 0 else '')
    return errors.Diverged(
        f'{problem}; stopping. No checkpoint since step {start_step} is good (finite params '
        f'that gave a finite loss below {bound:.3g} at the next step){older}. Lower '
        f'config.optim.base_lr and start again in a new workdir.')
  return errors.Diverged(
      f'{problem}; stopping. The last good checkpoint is step {good} in {states} (its '
      f'params gave a loss of {next_loss[good]:.4g} at step {good + 1}); any later ones '
      f'were moved to {os.path.join(workdir, checkpointing.CORRUPT_DIR)}. Lower '
      f'config.optim.base_lr and start a new workdir from it with '
      f'--config.init_from={os.path.join(states, str(good))}.')
