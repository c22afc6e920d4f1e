"""preflearn.pbrl: preference-based RL on trajectory segments.

Modules (import them directly; this package imports nothing heavy):

* ``segments``  trajectories, fixed-length segments with absorbing padding, pairs, offline readers
* ``teachers``  B-Pref simulated teachers (oracle, stochastic, mistake, myopic, skip, equal)
* ``reward``    Bradley-Terry reward ensembles over summed predicted rewards (PEBBLE)
* ``query``     uniform / disagreement / entropy query selection and the budgeted active loop
* ``regret``    regret vs partial-return preference models in tabular MDPs (Knox et al.)
* ``cpl``       Contrastive Preference Learning and behaviour cloning
* ``ipl``       Inverse Preference Learning (IQL value, AWR policy)
* ``cem``       a small CEM policy learner on vectorised gymnasium CartPole for learned rewards
* ``sb3``       stable-baselines3 on the learned reward: gymnasium wrapper, PEBBLE replay relabelling
* ``oppo``      Offline Preference-guided Policy Optimization (contextual policy + optimal context z*)
* ``dppo``      Direct Preference-based Policy Optimization (policy-segment distance)
* ``heron``     HERON hierarchical labels from ranked reward factors
* ``reed``      REED dynamics-aware reward ensembles (self-future consistency)
* ``prior``     Hindsight PRIOR world-model attention credit assignment
* ``diffusion_policy``  a small DDPM over state/action sequences (guidance, attribute masks, pinning)
* ``aligndiff`` AlignDiff attribute-strength model and attribute-conditioned diffusion planner
* ``diff_uapa`` Diff-UAPA: diffusion-policy alignment on regret preferences with a Beta prior
* ``icpl``      ICPL in-context preference learning of reward code (safe executor in ``icpl_code``)
* ``coop``      hybrid offline-online cooperative preference learning (corridor-kitchen reduction)

See docs/pbrl.md, docs/pbrl-diffusion.md and docs/pbrl-more.md.
"""
