"""HAQ-for-MCU: a DDPG agent picks 2/4/8 bits tensor by tensor under FLASH/RAM budgets.

An episode walks the decision steps in execution order. At each step the actor sees the
layer (index, type, in/out channels, kernel, stride, parameters, feature-map size, which
kinds of bits it decides) and its previous action, and outputs a continuous action in [0, 1]
per decided kind, mapped to a width by equal bins over {2, 4, 8}. The finished policy goes
through the paper's constraint rule (``MemoryModel.enforce``), is quantized and scored on the
proxy split; that accuracy is the reward of every transition of the episode (HAQ's scheme,
with a moving-average baseline). ``RLConfig.reward`` names what the score is: "ptq" (the
quantized model as it is, ``proxy.ProxyEvaluator``) or "qat" (after one epoch of
quantization-aware fine-tuning, the paper's reward, ``proxy.QATProxyEvaluator``); the caller
passes the matching ``reward_fn`` and the name is part of the state a resume must match.
Warm-up episodes act uniformly at random; afterwards actions are drawn from a truncated normal
around the actor's output whose width decays per episode.

Modes: "weights" (weight bits only, activations at 8, FLASH budget only), "concurrent"
(weight and activation bits of a layer decided in the same step), "independent" (first half of
the episodes searches weights, the second half activations with the weights fixed at the best
first-half policy; the replay buffer, noise and warm-up restart at the switch).

Everything a run depends on — episode, replay buffer, actor/critic and target weights,
optimizer slots, the NumPy generator state, noise width, baseline, best policy, history and
the reward cache — is written atomically after every episode, so a stopped search resumes
to exactly the episodes an uninterrupted run would have produced.
"""
import dataclasses
import os
import pickle
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import truncnorm
from tqdm.auto import tqdm

from tfq_tiny._compat import keras, tf
from tfq_tiny.errors import TfqError
from tfq_tiny.search.memory import ACTIVATION, WEIGHT

MODES = ("weights", "concurrent", "independent")
REWARDS = ("ptq", "qat")
_TYPES = ("conv", "depthwise", "dense", "input", "other")
_NUMERIC = ("in_channels", "out_channels", "kernel", "stride", "params", "feature_map")
STATE_VERSION = 1


@dataclass
class RLConfig:
    """Hyper-parameters of the DDPG search (defaults follow HAQ where it states them)."""

    episodes: int = 100
    warmup: int = 20
    mode: str = "concurrent"
    hidden: tuple = (300, 300)
    actor_lr: float = 1e-4
    critic_lr: float = 1e-3
    batch_size: int = 64
    buffer_size: int = 2000
    tau: float = 0.01
    discount: float = 1.0
    noise_sigma: float = 0.5
    noise_decay: float = 0.99
    moving_alpha: float = 0.5
    updates_per_episode: int | None = None
    reward: str = "ptq"
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise TfqError(f"RL search mode must be one of {MODES}, got {self.mode!r}.")
        if self.reward not in REWARDS:
            raise TfqError(f"reward must be one of {REWARDS} (proxy accuracy after PTQ, or after "
                           f"one epoch of QAT), got {self.reward!r}.")
        self.hidden = tuple(int(h) for h in self.hidden)

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["hidden"] = list(self.hidden)
        return out


def _bits_of(action, choices):
    return choices[min(int(action * len(choices)), len(choices) - 1)]


def _action_of(bits, choices):
    return (choices.index(bits) + 0.5) / len(choices)


def _init_dense(rng, fan_in, fan_out, limit=None):
    limit = np.sqrt(6.0 / (fan_in + fan_out)) if limit is None else limit
    return [rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32),
            np.zeros(fan_out, np.float32)]


def _opt_variables(optimizer):
    variables = optimizer.variables
    return variables() if callable(variables) and not isinstance(variables, list) else variables


class DDPGAgent:
    """Actor mu(s) in [0, 1]^k and critic Q(s, a), tf_keras MLPs, with soft-updated targets."""

    def __init__(self, state_dim, action_dim, config, rng):
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        self.actor = self._actor()
        self.actor_target = self._actor()
        self.critic = self._critic()
        self.critic_target = self._critic()
        self._init(rng)
        self.actor_opt = keras.optimizers.Adam(config.actor_lr)
        self.critic_opt = keras.optimizers.Adam(config.critic_lr)
        self.actor_opt.build(self.actor.trainable_variables)
        self.critic_opt.build(self.critic.trainable_variables)

    def _actor(self):
        s = keras.Input((self.state_dim,))
        x = s
        for h in self.config.hidden:
            x = keras.layers.Dense(h, activation="relu")(x)
        return keras.Model(s, keras.layers.Dense(self.action_dim, activation="sigmoid")(x))

    def _critic(self):
        s = keras.Input((self.state_dim,))
        a = keras.Input((self.action_dim,))
        x = keras.layers.Concatenate()([s, a])
        for h in self.config.hidden:
            x = keras.layers.Dense(h, activation="relu")(x)
        return keras.Model([s, a], keras.layers.Dense(1)(x))

    def _init(self, rng):
        for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            dense = [l for l in net.layers if isinstance(l, keras.layers.Dense)]
            weights = []
            for i, layer in enumerate(dense):
                fan_in, fan_out = layer.kernel.shape
                weights += _init_dense(rng, int(fan_in), int(fan_out),
                                       3e-3 if i == len(dense) - 1 else None)
            net.set_weights(weights)
            target.set_weights(weights)

    def act(self, state):
        return np.asarray(self.actor(state[None].astype(np.float32), training=False))[0]

    def update(self, s, a, r, s2, done):
        """One critic and one actor gradient step on a batch; then soft target updates."""
        cfg = self.config
        s, a, s2 = (tf.constant(v, tf.float32) for v in (s, a, s2))
        r = tf.constant(r[:, None], tf.float32)
        done = tf.constant(done[:, None], tf.float32)
        q_next = self.critic_target([s2, self.actor_target(s2, training=False)], training=False)
        target = r + cfg.discount * (1.0 - done) * q_next
        with tf.GradientTape() as tape:
            critic_loss = tf.reduce_mean(tf.square(self.critic([s, a], training=True) - target))
        grads = tape.gradient(critic_loss, self.critic.trainable_variables)
        self.critic_opt.apply_gradients(zip(grads, self.critic.trainable_variables))
        with tf.GradientTape() as tape:
            actor_loss = -tf.reduce_mean(self.critic([s, self.actor(s, training=True)]))
        grads = tape.gradient(actor_loss, self.actor.trainable_variables)
        self.actor_opt.apply_gradients(zip(grads, self.actor.trainable_variables))
        for net, target in ((self.actor, self.actor_target), (self.critic, self.critic_target)):
            for w, wt in zip(net.trainable_variables, target.trainable_variables):
                wt.assign((1.0 - cfg.tau) * wt + cfg.tau * w)
        return float(critic_loss), float(actor_loss)

    def get_state(self):
        return {name: getattr(self, name).get_weights()
                for name in ("actor", "actor_target", "critic", "critic_target")} | {
            "actor_opt": [v.numpy() for v in _opt_variables(self.actor_opt)],
            "critic_opt": [v.numpy() for v in _opt_variables(self.critic_opt)]}

    def set_state(self, state):
        for name in ("actor", "actor_target", "critic", "critic_target"):
            getattr(self, name).set_weights(state[name])
        for name in ("actor_opt", "critic_opt"):
            for var, value in zip(_opt_variables(getattr(self, name)), state[name]):
                var.assign(value)


class ReplayBuffer:
    """A ring buffer of (state, action, reward, next state, done) in NumPy arrays."""

    def __init__(self, size, state_dim, action_dim):
        self.size = int(size)
        self.s = np.zeros((self.size, state_dim), np.float32)
        self.a = np.zeros((self.size, action_dim), np.float32)
        self.r = np.zeros(self.size, np.float32)
        self.s2 = np.zeros((self.size, state_dim), np.float32)
        self.done = np.zeros(self.size, np.float32)
        self.pos = 0
        self.count = 0

    def add(self, s, a, r, s2, done):
        i = self.pos
        self.s[i], self.a[i], self.r[i], self.s2[i], self.done[i] = s, a, r, s2, done
        self.pos = (i + 1) % self.size
        self.count = min(self.count + 1, self.size)

    def sample(self, rng, batch_size):
        idx = rng.integers(0, self.count, size=min(batch_size, self.count))
        return self.s[idx], self.a[idx], self.r[idx], self.s2[idx], self.done[idx]

    def get_state(self):
        return {k: getattr(self, k).copy() for k in ("s", "a", "r", "s2", "done")} | {
            "pos": self.pos, "count": self.count}

    def set_state(self, state):
        for k in ("s", "a", "r", "s2", "done"):
            getattr(self, k)[...] = state[k]
        self.pos, self.count = int(state["pos"]), int(state["count"])


@dataclass
class SearchResult:
    """Outcome of a search (RL or fast) with what is needed to report and plot it."""

    method: str
    policy: object
    assignment: dict
    accuracy: float | None
    flash: int
    ram: int
    seconds: float
    history: list
    episodes: int = 0
    interrupted: bool = False


def _atomic_pickle(obj, path):
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class RLSearch:
    """The HAQ-for-MCU DDPG search.

    Args:
      memory_model: a ``MemoryModel`` of the float model (names the variables, M1/M2, rule).
      reward_fn: policy -> proxy accuracy in percent, e.g. ``ProxyEvaluator(...).accuracy``.
      flash, ram: budgets in bytes.
      config: ``RLConfig``.
      state_path: file the search state is written to after every episode; an existing file
        with the same config, budgets, variables and ``reward_identity`` is resumed from when
        ``resume`` is set.
      reward_identity: what the rewards depend on besides the policy (e.g.
        ``ProxyEvaluator.fingerprint``: float weights, calibration and proxy data), so a state
        whose cached rewards came from another model or proxy split is never resumed.
    """

    def __init__(self, memory_model, reward_fn, flash, ram, config=None, state_path=None,
                 resume=False, reward_identity=None):
        self.mm = memory_model
        self.reward_identity = reward_identity
        self.reward_fn = reward_fn
        self.flash, self.ram = int(flash), int(ram)
        self.config = config or RLConfig()
        self.state_path = state_path
        cfg = self.config
        self.action_dim = 2 if cfg.mode == "concurrent" else 1
        self.mm.check_feasible(self.flash, None if cfg.mode == "weights" else self.ram)
        self.rng = np.random.default_rng(cfg.seed)
        self.state_dim = len(_TYPES) + len(_NUMERIC) + 3 + self.action_dim
        self.agent = DDPGAgent(self.state_dim, self.action_dim, cfg, self.rng)
        self.buffer = ReplayBuffer(cfg.buffer_size, self.state_dim, self.action_dim)
        self.episode = 0
        self.sigma = cfg.noise_sigma
        self.baseline = None
        self.best = None
        self.phase_best = None
        self.history = []
        self.cache = {}
        self.elapsed = 0.0
        if resume and state_path and os.path.exists(state_path):
            self.load_state(state_path)

    def _identity(self):
        return {"config": self.config.to_dict(), "flash": self.flash, "ram": self.ram,
                "variables": [str(v) for v in self.mm.variables], "version": STATE_VERSION,
                "reward": self.reward_identity}

    def phase_of(self, episode):
        if self.config.mode != "independent":
            return 0
        return 0 if episode < self.config.episodes // 2 else 1

    def _phase_start(self, phase):
        return 0 if phase == 0 else self.config.episodes // 2

    def steps(self, phase):
        """Decision steps as (weight key or None, activation key or None) in execution order."""
        mode = self.config.mode
        if mode == "weights" or (mode == "independent" and phase == 0):
            return [(v.key, None) for v in self.mm.searchable((WEIGHT,))]
        if mode == "independent":
            return [(None, v.key) for v in self.mm.searchable((ACTIVATION,))]
        steps = []
        for v in self.mm.searchable():
            if v.kind == WEIGHT:
                steps.append([v.key, None])
            elif (steps and steps[-1][0] is not None and steps[-1][1] is None
                  and self.mm.by_key[steps[-1][0]].op == v.op):
                steps[-1][1] = v.key
            else:
                steps.append([None, v.key])
        return [tuple(s) for s in steps]

    def features(self, steps):
        """The static part of every step's state, each numeric feature scaled to [0, 1]."""
        rows = []
        for t, (wk, ak) in enumerate(steps):
            info = self.mm.by_key[wk or ak].info
            onehot = [float(info["type"] == k) for k in _TYPES]
            rows.append([t / max(len(steps) - 1, 1)] + onehot
                        + [float(info[k]) for k in _NUMERIC]
                        + [float(wk is not None), float(ak is not None)])
        feats = np.array(rows, np.float32)
        numeric = slice(1 + len(_TYPES), 1 + len(_TYPES) + len(_NUMERIC))
        scale = feats[:, numeric].max(0)
        feats[:, numeric] /= np.where(scale > 0, scale, 1.0)
        return feats

    def _budgets(self, phase):
        mode = self.config.mode
        if mode == "weights" or (mode == "independent" and phase == 0):
            return self.flash, None, [v.key for v in self.mm.activation_variables]
        if mode == "independent":
            return self.flash, self.ram, [v.key for v in self.mm.weight_variables]
        return self.flash, self.ram, []

    def _start(self, phase):
        assignment = self.mm.assignment()
        for v in self.mm.searchable():
            assignment[v.key] = 8
        if self.config.mode == "independent" and phase == 1:
            for v in self.mm.weight_variables:
                assignment[v.key] = self.phase_best["assignment"][v.key]
        return assignment

    def _reward(self, assignment):
        key = tuple(sorted((f"{k[0]}:{k[1]}", b) for k, b in assignment.items()))
        if key not in self.cache:
            self.cache[key] = float(self.reward_fn(self.mm.policy(assignment)))
        return self.cache[key]

    def _noisy(self, mean):
        sigma = max(self.sigma, 1e-6)
        lo, hi = (0.0 - mean) / sigma, (1.0 - mean) / sigma
        return np.asarray(truncnorm.rvs(lo, hi, loc=mean, scale=sigma, size=mean.shape,
                                        random_state=self.rng), np.float32)

    def run_episode(self):
        """One episode: act, enforce the budgets, score, store, learn. Returns its record."""
        cfg = self.config
        start = time.perf_counter()
        phase = self.phase_of(self.episode)
        if phase == 1 and self.episode == self._phase_start(1):
            self.buffer = ReplayBuffer(cfg.buffer_size, self.state_dim, self.action_dim)
            self.sigma, self.baseline = cfg.noise_sigma, None
        steps = self.steps(phase)
        static = self.features(steps)
        warm = self.episode - self._phase_start(phase) < cfg.warmup
        choices = self.mm.choices
        assignment = self._start(phase)
        states, actions = [], []
        prev = np.zeros(self.action_dim, np.float32)
        for t, (wk, ak) in enumerate(steps):
            s = np.concatenate([static[t], prev]).astype(np.float32)
            if warm:
                a = self.rng.uniform(0.0, 1.0, self.action_dim).astype(np.float32)
            else:
                a = self._noisy(self.agent.act(s))
            keys = (wk, ak) if self.action_dim == 2 else (wk or ak,)
            for j, key in enumerate(keys):
                if key is not None:
                    assignment[key] = _bits_of(float(a[j]), choices)
            states.append(s)
            actions.append(a)
            prev = a
        flash, ram, frozen = self._budgets(phase)
        enforced = self.mm.enforce(assignment, flash, ram, frozen)
        for t, (wk, ak) in enumerate(steps):
            keys = (wk, ak) if self.action_dim == 2 else (wk or ak,)
            for j, key in enumerate(keys):
                if key is not None and enforced[key] != assignment[key]:
                    actions[t][j] = _action_of(enforced[key], choices)
        accuracy = self._reward(enforced)
        reward = accuracy / 100.0
        for t in range(len(steps)):
            last = t == len(steps) - 1
            s2 = states[t] if last else states[t + 1]
            self.buffer.add(states[t], actions[t], reward, s2, float(last))
        self.baseline = reward if self.baseline is None else (
            self.baseline + cfg.moving_alpha * (reward - self.baseline))
        if not warm:
            for _ in range(cfg.updates_per_episode or len(steps)):
                s, a, r, s2, done = self.buffer.sample(self.rng, cfg.batch_size)
                self.agent.update(s, a, r - self.baseline, s2, done)
            self.sigma *= cfg.noise_decay
        m1, m2 = self.mm.memory(enforced)
        candidate = {"assignment": enforced, "accuracy": accuracy, "flash": m1, "ram": m2,
                     "episode": self.episode}
        if cfg.mode == "independent" and phase == 0 and (
                self.phase_best is None or accuracy > self.phase_best["accuracy"]):
            self.phase_best = candidate
        if phase == self.phase_of(cfg.episodes - 1) and (
                self.best is None or accuracy > self.best["accuracy"]):
            self.best = candidate
        record = {"episode": self.episode, "phase": phase, "warmup": warm,
                  "bits": {str(self.mm.by_key[k]): int(b) for k, b in enforced.items()},
                  "flash": m1, "ram": m2, "accuracy": accuracy, "sigma": self.sigma,
                  "best_accuracy": None if self.best is None else self.best["accuracy"],
                  "best_bits": None if self.best is None else {
                      str(self.mm.by_key[k]): int(b) for k, b in self.best["assignment"].items()},
                  "best_flash": None if self.best is None else self.best["flash"],
                  "best_ram": None if self.best is None else self.best["ram"],
                  "seconds": time.perf_counter() - start}
        self.history.append(record)
        self.episode += 1
        return record

    def run(self, max_episodes=None, progress=True):
        """Run (or continue) the search up to ``config.episodes`` (or ``max_episodes``).

        The state is saved after every episode; Ctrl-C stops after discarding the episode
        in progress, so resuming from the file continues exactly.
        """
        stop = self.config.episodes if max_episodes is None else min(max_episodes,
                                                                    self.config.episodes)
        bar = tqdm(total=self.config.episodes, initial=self.episode, desc="RL search",
                   disable=not progress)
        interrupted = False
        try:
            while self.episode < stop:
                t0 = time.perf_counter()
                record = self.run_episode()
                self.elapsed += time.perf_counter() - t0
                if self.state_path:
                    self.save_state(self.state_path)
                bar.update(1)
                best = record["best_accuracy"]
                bar.set_postfix_str(f"acc {record['accuracy']:.2f} best "
                                    f"{float('nan') if best is None else best:.2f} "
                                    f"M1 {record['flash']} M2 {record['ram']}")
        except KeyboardInterrupt:
            interrupted = True
            if self.state_path and os.path.exists(self.state_path):
                self.load_state(self.state_path)
        finally:
            bar.close()
        return self.result(interrupted)

    def result(self, interrupted=False):
        best = self.best or self.phase_best
        if best is None:
            return SearchResult("rl", None, {}, None, 0, 0, self.elapsed, self.history,
                                self.episode, interrupted)
        return SearchResult("rl", self.mm.policy(best["assignment"]), best["assignment"],
                            best["accuracy"], best["flash"], best["ram"], self.elapsed,
                            self.history, self.episode, interrupted)

    def get_state(self):
        return {"identity": self._identity(), "episode": self.episode,
                "rng": self.rng.bit_generator.state, "agent": self.agent.get_state(),
                "buffer": self.buffer.get_state(), "sigma": self.sigma,
                "baseline": self.baseline, "best": self.best, "phase_best": self.phase_best,
                "history": self.history, "cache": self.cache, "elapsed": self.elapsed}

    def set_state(self, state):
        if state.get("identity") != self._identity():
            raise TfqError(
                "The search state file was written by a different search (config, budgets, "
                "model variables, or the model/calibration/proxy data behind the rewards "
                "differ); start a new one with another state path, or resume with the same "
                "settings.")
        self.episode = int(state["episode"])
        self.rng.bit_generator.state = state["rng"]
        self.agent.set_state(state["agent"])
        self.buffer = ReplayBuffer(self.config.buffer_size, self.state_dim, self.action_dim)
        self.buffer.set_state(state["buffer"])
        self.sigma, self.baseline = state["sigma"], state["baseline"]
        self.best, self.phase_best = state["best"], state["phase_best"]
        self.history = list(state["history"])
        self.cache = dict(state["cache"])
        self.elapsed = float(state["elapsed"])

    def save_state(self, path):
        """Write the whole search state to ``path`` atomically (temp file + os.replace)."""
        _atomic_pickle(self.get_state(), path)

    def load_state(self, path):
        """Restore a state written by ``save_state`` (only load files you wrote: pickle)."""
        with open(path, "rb") as f:
            self.set_state(pickle.load(f))
