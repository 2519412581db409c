"""The GP loop: initial population, selection, variation, evaluation through an executor, checkpoint, resume.

One generation::

    elites   = best `elites` distinct functions of the population            (truncation, the paper's μ)
    children = clones of random elites (or tournament winners)               (λ = population − elites)
               → one-point crossover of consecutive pairs (p = crossover_prob)
               → subtree mutation (p = mutation_prob)
               → re-mutation of children already seen (unique_children)
    evaluate every function not in the fitness cache (+ elites' extra seeds when re-evaluating)
    checkpoint

Generation 0 is the initial population (the seed functions, copied, plus random trees). Everything random in the
loop comes from one :class:`random.Random` seeded from the run seed and saved in each checkpoint, and a fitness
depends only on (formula, task, seed), so a run killed at any moment and resumed ends exactly as an uninterrupted
run with the same seed.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoprune.atomic import check_output
from evoprune.config import to_data
from evoprune.errors import ConfigError
from evoprune.evolve.config import EvolutionConfig, config_to_dict
from evoprune.evolve.fitness import (
    FitnessBatch,
    FitnessJob,
    PreparedTask,
    combine_fitness,
    derive_seed,
    prepare_task,
    run_finetune_job,
    worst_fitness,
)
from evoprune.evolve.operators import Variation, VariationStats
from evoprune.evolve.population import (
    CacheEntry,
    Evaluation,
    FitnessCache,
    Individual,
    population_stats,
    promoted,
    select_elites,
    tournament,
)
from evoprune.evolve.rundir import (
    Checkpoint,
    RunDir,
    RunDirError,
    random_state_to_json,
    rng_state,
    set_rng_state,
    write_json_atomic,
)
from evoprune.evolve.screen import run_oracle_job, run_recal_job
from evoprune.expr import FormulaError, height, parse, size, to_infix
from evoprune.parallel import Executor, Job, Outcome, make_executor, torch_threads

# Imported by each local worker process at start-up, while the main process pretrains (torch._dynamo: the first
# optimizer a process builds imports it, about 2 s).
WORKER_PRELOAD = ("torch._dynamo", "evoprune.evolve.fitness", "evoprune.evolve.batched", "evoprune.evolve.screen",
                  "evoprune.prune", "evoprune.metrics")

#: Evaluation settings that never change a result, so results.json leaves them out of its config.
EXECUTION_KEYS = ("executor", "workers", "address", "gpus_per_task")

#: The job function of each fidelity (``fn(FitnessJob, TaskBundle) -> {"score": ..., details}``; at ``finetune``
#: also ``fn(FitnessBatch, TaskBundle) -> {"members": [...]}``).
JOB_FUNCTIONS = {"oracle": run_oracle_job, "recal": run_recal_job, "finetune": run_finetune_job}


class Observer:
    """Hooks for a live view (the CLI's) or logging; every method is optional."""

    def run_started(self, info: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def generation_started(self, generation: int, generations: int, jobs: int) -> None: ...
    def evaluation_done(self, record: dict[str, Any]) -> None: ...
    def generation_done(self, stats: dict[str, Any], hall_of_fame: list[CacheEntry]) -> None: ...


@dataclass
class HallOfFameEntry:
    """A function of the hall of fame, ready to print or export.

    ``fidelity`` is the most expensive fidelity it reached (None if every evaluation failed); ``fitness`` and the
    per-task ``accuracies`` are its scores there (Spearman correlations at ``oracle``); ``evaluations`` counts
    them at every fidelity.
    """

    rank: int
    formula: str
    infix: str
    fitness: float
    accuracies: dict[str, float]
    evaluations: int
    failures: int
    size: int
    height: int
    first_generation: int
    origin: str
    fidelity: str | None = None

    @staticmethod
    def of(rank: int, entry: CacheEntry) -> HallOfFameEntry:
        return HallOfFameEntry(rank, entry.key, to_infix(parse(entry.key)), entry.fitness, dict(entry.accuracies),
                               len(entry.evaluations), entry.failures, entry.size, entry.height,
                               entry.first_generation, entry.origin, entry.reached)


@dataclass
class EvolutionResult:
    """What a finished run found, and how it got there.

    ``results.json`` (:meth:`to_dict`) holds only what the seed determines, so the same seed gives the same file
    byte for byte, in any process and after any resume. Where and how fast the run went (``run_dir``,
    ``seconds``, ``executor``, per-generation ``timing``) stays on this object, in ``report.md`` and in
    ``events.jsonl``.
    """

    run_dir: Path
    config: EvolutionConfig
    hall_of_fame: list[HallOfFameEntry]
    history: list[dict[str, Any]]
    tasks: dict[str, dict[str, Any]]
    seeds: list[HallOfFameEntry]
    seconds: float
    evaluations: int
    failures: int
    executor: str
    timing: list[dict[str, Any]]  # per generation: seconds, jobs run in that process, evaluations reused from the log

    @property
    def best(self) -> HallOfFameEntry:
        return self.hall_of_fame[0]

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        config = config_to_dict(self.config)
        for key in EXECUTION_KEYS:  # where the run went, not what it computed (events.jsonl and report.md say)
            config["evaluation"].pop(key, None)
        return {
            "config": config,
            "best": asdict(self.best), "hall_of_fame": [asdict(h) for h in self.hall_of_fame],
            "seed_functions": [asdict(s) for s in self.seeds], "history": self.history, "tasks": self.tasks,
            "evaluations": self.evaluations, "failures": self.failures,
            "selection": self.config.selection_rule(),
        }


@dataclass
class _State:
    generation: int = -1
    population: list[Individual] = field(default_factory=list)
    cache: FitnessCache = field(default_factory=FitnessCache)
    history: list[dict[str, Any]] = field(default_factory=list)
    timing: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    evaluations: int = 0
    failures: int = 0


class Evolution:
    """One run. Use :func:`evolve`; this class holds the state between generations."""

    def __init__(self, config: EvolutionConfig, run_dir: RunDir, executor: Executor, observer: Observer,
                 progress: bool) -> None:
        self.config = config
        self.run_dir = run_dir
        self.executor = executor
        self.observer = observer
        self.progress = progress
        self.weights = config.task_weights()
        self.variation = Variation(config.operators)
        self.rng = random.Random(derive_seed(config.seed, "gp"))
        self.state = _State()
        self.journal: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        self.tasks: dict[str, PreparedTask] = {}
        self.seed_keys: dict[str, str] = {}

    # --- setup ----------------------------------------------------------------------------------------------------

    def log(self, event: str, **fields: Any) -> dict[str, Any]:
        return self.run_dir.log(event, **fields)

    def prepare(self) -> None:
        """Pretrain (or reload) every task's model and ship the task bundles to the executor's workers."""
        for task in self.config.tasks:
            self.observer.message(f"preparing task {task.name}: {task.model} on {task.dataset}")
            prepared = prepare_task(task, self.config, self.run_dir.models_dir, progress=self.progress, log=self.log,
                                    oracle_dir=self.run_dir.oracle_dir)
            self.tasks[task.name] = prepared
            self.executor.share(task.name, prepared.bundle)
        self.variation.set_real_layers([d for p in self.tasks.values() for d in p.bundle.layers])

    def load(self, checkpoint: Checkpoint | None, journal: dict[tuple[str, str, int, str], dict[str, Any]]) -> None:
        """Restore the state of the last finished generation (checked by :meth:`RunDir.read_checkpoint`), and the
        evaluations logged after it."""
        self.journal = journal
        if checkpoint is None:
            return
        st = self.state
        st.generation = checkpoint.generation
        st.cache = FitnessCache({d["key"]: CacheEntry.from_dict(d, self.weights) for d in checkpoint.cache})
        st.population = []
        for i, (formula, origin) in enumerate(checkpoint.population):
            try:
                st.population.append(self._individual(formula, origin))
            except FormulaError as exc:
                raise RunDirError(f"{self.run_dir.checkpoint_path}: field population[{i}].formula is outside this "
                                  f"run's primitive set ({exc.reason}); the checkpoint cannot be resumed") from None
        st.history = list(checkpoint.history)
        st.timing = list(checkpoint.timing)
        st.elapsed = checkpoint.elapsed
        st.evaluations = checkpoint.evaluations
        st.failures = checkpoint.failures
        self.rng = checkpoint.gp_rng
        set_rng_state(checkpoint.global_rng)

    def _individual(self, formula: str, origin: str) -> Individual:
        tree = self.variation.from_formula(formula)
        return Individual(tree, self.variation.formula(tree), self.variation.key(tree), origin)

    def _of_tree(self, tree: Any, origin: str) -> Individual:
        return Individual(tree, self.variation.formula(tree), self.variation.key(tree), origin)

    # --- populations ----------------------------------------------------------------------------------------------

    def initial_population(self, stats: VariationStats) -> list[Individual]:
        from evoprune.metrics import get_metric

        ev = self.config.evolution
        population: list[Individual] = []
        for name in ev.seeds:
            try:
                metric = get_metric(name)
            except (FormulaError, ValueError) as exc:
                raise ConfigError(f"evolution.seeds: {name!r} is neither a metric name nor a formula: {exc}") from None
            if metric.formula is None:
                raise ConfigError(f"evolution.seeds: metric {name!r} has no formula in the design space; GP needs a tree")
            try:
                ind = self._individual(metric.formula, f"seed:{metric.name}")
            except FormulaError as exc:
                raise ConfigError(f"evolution.seeds: {name!r} is outside this primitive set (operators.exclude or a "
                                  f"shape outside it): {exc}") from None
            self.seed_keys[metric.name] = ind.key
            population.extend(Individual(ind.tree, ind.formula, ind.key, ind.origin) for _ in range(ev.seed_copies))
        for _ in range(ev.random_init):
            tree = self.variation.random_tree(self.rng, stats)
            if tree is not None:
                population.append(self._of_tree(tree, "random"))
        if not population:
            raise ConfigError("the initial population is empty (no seed copies and no valid random tree)")
        return population

    def _seen(self, key: str, taken: set[str]) -> bool:
        entry = self.state.cache.get(key)
        return key in taken or (entry is not None and entry.evaluated)

    def next_population(self, stats: VariationStats) -> tuple[list[Individual], list[Individual]]:
        """Elites plus varied children; returns ``(population, elites)``."""
        ev = self.config.evolution
        old, cache, rng = self.state.population, self.state.cache, self.rng
        elites = select_elites(old, cache, ev.elites)
        n_children = ev.population - len(elites)
        if ev.selection == "truncation":
            parents = [rng.choice(elites) for _ in range(n_children)]
        else:
            parents = [tournament(old, cache, ev.tournament_size, rng) for _ in range(n_children)]
        trees = [p.tree for p in parents]
        origins = ["clone"] * n_children
        for i in range(0, n_children - 1, 2):
            if rng.random() < ev.crossover_prob:
                a, b, changed = self.variation.crossover(trees[i], trees[i + 1], rng, stats)
                if changed:
                    trees[i], trees[i + 1] = a, b
                    origins[i] = origins[i + 1] = "crossover"
        for i in range(n_children):
            if rng.random() < ev.mutation_prob:
                child, changed = self.variation.mutate(trees[i], rng, stats)
                if changed:
                    trees[i] = child
                    origins[i] = "mutation" if origins[i] == "clone" else "crossover+mutation"
        taken = {e.key for e in elites}
        children = []
        for tree, origin in zip(trees, origins):
            ind = self._of_tree(tree, origin)
            if ev.unique_children and self._seen(ind.key, taken):
                child, changed = self.variation.mutate(
                    tree, rng, stats, accept=lambda t: not self._seen(self.variation.key(t), taken))
                if changed:
                    ind = self._of_tree(child, origin + "+novelty" if origin != "clone" else "mutation")
                else:
                    stats.duplicates_kept += 1
            taken.add(ind.key)
            children.append(ind)
        elites = [Individual(e.tree, e.formula, e.key, "elite") for e in elites]
        return elites + children, elites

    # --- evaluation -----------------------------------------------------------------------------------------------

    def _register(self, ind: Individual, generation: int) -> None:
        if ind.key not in self.state.cache:
            node = parse(ind.key)
            self.state.cache[ind.key] = CacheEntry(ind.key, size(node), height(node), generation, ind.origin)

    def evaluate(self, population: list[Individual], elites: list[Individual],
                 generation: int) -> tuple[dict[str, Any], dict[str, int]]:
        """Evaluate the generation fidelity by fidelity (successive halving), and elites once more at the top
        fidelity if re-evaluation is on.

        The generation's *new* candidates are its distinct functions other than the carried-over elites (all of
        generation 0). Each gets the cheapest fidelity (from the cache when it was evaluated there before); of those
        at ``levels[i]``, the best ``promote[i]`` fraction (rounded up; never one whose evaluations there all failed)
        goes on to ``levels[i + 1]``. Returns the generation's counts (what the seed determines) and its work in this
        process (jobs run, evaluations reused from the log of a killed run), which depends on where the run was
        interrupted.
        """
        cache, ev, fid = self.state.cache, self.config.evolution, self.config.fidelity
        levels = fid.levels
        pool: list[str] = []
        hits = 0
        for ind in population:
            self._register(ind, generation)
            if ind.origin == "elite":
                continue
            if cache[ind.key].has(levels[0]):
                hits += 1
            if ind.key not in pool:
                pool.append(ind.key)
        counts: dict[str, Any] = {"evaluated": 0, "reevaluated": 0, "cache_hits": hits, "failed": 0}
        work = {"jobs": 0, "reused": 0}
        per_level: dict[str, dict[str, int]] = {}
        for i, level in enumerate(levels):
            if i > 0:
                pool = promoted(pool, cache, levels[i - 1], fid.promote[i - 1])
            wanted = [(key, 0) for key in pool if not cache[key].has(level)]
            new = len(wanted)
            if level == fid.top and ev.reevaluate_elites and generation > 0:
                for ind in elites:
                    done = len(cache[ind.key].at(level))
                    if 0 < done < ev.max_evaluations and (ind.key, done) not in wanted:
                        wanted.append((ind.key, done))
                        counts["reevaluated"] += 1
            failed = self._run_level(level, wanted, generation, work)
            counts["failed"] += failed
            if i == 0:
                counts["evaluated"] = new
            per_level[level] = {"candidates": len(pool), "evaluated": new, "failed": failed}
        if len(levels) > 1:
            counts["fidelities"] = per_level
        return counts, work

    def _run_level(self, level: str, wanted: list[tuple[str, int]], generation: int, work: dict[str, int]) -> int:
        """Evaluate ``(key, index)`` pairs on every task at one fidelity (or take them from the log); returns how
        many task evaluations failed.

        At ``finetune`` a task with ``finetune_batch`` > 1 gets its pairs of one index (one seed) in consecutive
        chunks of that size, each one :class:`FitnessBatch` job. A chunk runs whole unless all of it is in the log:
        a member's result depends (to float tolerance) on who shares its batch, so a resumed run rebuilds the
        chunks a run without interruption had."""
        jobs: list[Job] = []
        meta: dict[str, list[tuple[str, int, str]]] = {}
        results: dict[tuple[str, int, str], dict[str, Any]] = {}
        for task in self.config.tasks:
            for chunk in self._chunks(level, wanted, task.finetune_batch):
                idents = [(key, index, task.name) for key, index in chunk]
                logged = [self.journal.get((key, level, index, task.name)) for key, index in chunk]
                if all(r is not None for r in logged):
                    results.update(zip(idents, logged))  # type: ignore[arg-type]
                    work["reused"] += len(chunk)
                    continue
                job_id = f"g{generation}-{level}-{len(jobs)}"
                index = chunk[0][1]
                seed = derive_seed(self.config.seed, "eval", index, task.name)
                payload: FitnessJob | FitnessBatch = (
                    FitnessBatch(tuple(key for key, _ in chunk), task.name, index, seed, level) if len(chunk) > 1
                    else FitnessJob(chunk[0][0], task.name, index, seed, level))
                jobs.append(Job(job_id, payload, shared=task.name))
                meta[job_id] = idents
                for ident, entry in zip(idents, logged):
                    if entry is not None:  # kept as logged; the chunk's rerun only restores its composition
                        results[ident] = entry
                        work["reused"] += 1
        self.observer.generation_started(generation, self.config.evolution.generations, len(jobs))
        worst = worst_fitness(level)

        def record(ident: tuple[str, int, str], outcome: Outcome, value: dict[str, Any]) -> None:
            key, index, task = ident
            entry = self.log(
                "evaluation", generation=generation, key=key, fidelity=level, index=index, task=task,
                status=outcome.status, score=float(value.get("score", worst)) if outcome.ok else worst,
                error=outcome.error, seconds=outcome.seconds, worker=outcome.worker,
                details={k: v for k, v in value.items() if k != "score"},
            )
            if not outcome.ok:
                self.log("failure", key=key, fidelity=level, task=task, status=outcome.status, error=outcome.error)
            results[ident] = entry
            self.observer.evaluation_done(entry)

        def done(outcome: Outcome) -> None:
            idents = meta[outcome.id]
            if len(idents) == 1:
                record(idents[0], outcome, outcome.value if outcome.ok else {})
                return
            members = outcome.value["members"] if outcome.ok else [{}] * len(idents)
            for ident, value in zip(idents, members):
                if ident in results:
                    continue
                if "error" in value:
                    record(ident, Outcome(outcome.id, "error", error=value["error"], seconds=0.0,
                                          worker=outcome.worker), {})
                else:
                    seconds = float(value.get("seconds", outcome.seconds / len(idents)))
                    record(ident, Outcome(outcome.id, outcome.status, error=outcome.error, seconds=seconds,
                                          worker=outcome.worker), value)

        timeout = self.config.evaluation.timeout or None
        batch = max((len(ids) for ids in meta.values()), default=1)
        if jobs:
            self.executor.run(JOB_FUNCTIONS[level], jobs, timeout=timeout and timeout * batch, on_done=done)
        work["jobs"] += len(jobs)
        for key, index in wanted:
            tasks = {}
            for task in self.config.tasks:
                r = results[(key, index, task.name)]
                tasks[task.name] = {"score": float(r["score"]), "status": r["status"], "error": r.get("error"),
                                    "seconds": float(r.get("seconds", 0.0))}
            fitness = combine_fitness(level, {t: v["score"] for t, v in tasks.items()}, self.weights)
            self.state.cache[key].add(Evaluation(index, tasks, fitness, level), self.weights)
        failures = sum(1 for r in results.values() if r["status"] != "ok")
        self.state.evaluations += len(results)
        self.state.failures += failures
        return failures

    @staticmethod
    def _chunks(level: str, wanted: list[tuple[str, int]], size: int) -> list[list[tuple[str, int]]]:
        """The jobs' pairs on one task: one each, or at ``finetune`` consecutive pairs of one index, ``size`` at most."""
        if level != "finetune" or size <= 1:
            return [[pair] for pair in wanted]
        by_index: dict[int, list[tuple[str, int]]] = {}
        for pair in wanted:
            by_index.setdefault(pair[1], []).append(pair)
        return [pairs[i:i + size] for pairs in by_index.values() for i in range(0, len(pairs), size)]

    # --- loop -----------------------------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        st = self.state
        self.run_dir.write_checkpoint({
            "generation": st.generation, "fitness_hash": self.config.fitness_hash(),
            "population": [ind.to_dict() for ind in st.population],
            "cache": [e.to_dict() for e in st.cache.values()],
            "history": st.history, "timing": st.timing, "gp_rng": random_state_to_json(self.rng),
            "global_rng": rng_state(),
            "elapsed": st.elapsed, "evaluations": st.evaluations, "failures": st.failures,
        })

    def step(self, generation: int) -> dict[str, Any]:
        start = time.perf_counter()
        vstats = VariationStats()
        if generation == 0:
            population, elites = self.initial_population(vstats), []
        else:
            population, elites = self.next_population(vstats)
        counts, work = self.evaluate(population, elites, generation)
        st = self.state
        st.population, st.generation = population, generation
        seconds = time.perf_counter() - start
        st.elapsed += seconds
        best = min(population, key=lambda ind: st.cache[ind.key].rank_key())
        entry = st.cache[best.key]
        stats = {
            "generation": generation, **population_stats(population, st.cache, self.config.fidelity.levels[0]),
            **counts,
            "best_formula": best.key, "best_infix": to_infix(parse(best.key)), "best_fidelity": entry.reached,
            "best_accuracies": dict(entry.accuracies), "hall_of_fame_best": st.cache.hall_of_fame(1)[0].fitness,
            "variation": vstats.as_dict(),
        }
        timing = {"generation": generation, "seconds": seconds, **work}
        st.history.append(stats)
        st.timing.append(timing)
        self.checkpoint()
        self.log("population", generation=generation, population=[ind.key for ind in population],
                 origins=[ind.origin for ind in population])
        self.log("generation", **{**stats, **timing})
        self.observer.generation_done({**stats, **timing},
                                      st.cache.hall_of_fame(self.config.evolution.hall_of_fame))
        return stats

    def run(self) -> EvolutionResult:
        # The main process's own tensor work (validity checks, serial evaluations) uses the evaluation thread
        # count too, so nothing in a run depends on the caller's torch settings.
        with torch_threads(self.config.evaluation.threads):
            for generation in range(self.state.generation + 1, self.config.evolution.generations):
                self.step(generation)
        return self.result()

    def result(self) -> EvolutionResult:
        st, ev = self.state, self.config.evolution
        hof = [HallOfFameEntry.of(i + 1, e) for i, e in enumerate(st.cache.hall_of_fame(ev.hall_of_fame))]
        if not self.seed_keys:
            self._recompute_seed_keys()
        seeds = []
        for name, key in sorted(self.seed_keys.items(), key=lambda item: st.cache[item[1]].rank_key()
                                if item[1] in st.cache else (1, 0.0, 0, item[1])):
            entry = st.cache.get(key)
            if entry is not None and entry.evaluated:
                item = HallOfFameEntry.of(0, entry)
                item.origin = f"seed:{name}"
                seeds.append(item)
        tasks = {
            name: {"model": p.config.model, "dataset": p.config.dataset, "weight": self.weights[name],
                   "schedule": to_data(p.config.schedule), "pretrained_val_accuracy": p.pretrained_val_accuracy,
                   "data_sizes": p.data_sizes, "checkpoint": _relative(p.checkpoint, self.run_dir.path)}
            for name, p in self.tasks.items()
        }
        return EvolutionResult(self.run_dir.path, self.config, hof, st.history, tasks, seeds, st.elapsed,
                               st.evaluations, st.failures, self.executor.describe(), st.timing)

    def _recompute_seed_keys(self) -> None:
        from evoprune.metrics import get_metric

        for name in self.config.evolution.seeds:
            try:
                metric = get_metric(name)
                if metric.formula is not None:
                    self.seed_keys[metric.name] = self.variation.key(self.variation.from_formula(metric.formula))
            except (FormulaError, ValueError):
                continue


def _relative(path: Path, run_dir: Path) -> str:
    """``path`` relative to the run directory when inside it (results do not depend on where the run lives)."""
    try:
        return path.relative_to(run_dir).as_posix()
    except ValueError:
        return str(path)


def _executor_for(config: EvolutionConfig, executor: Executor | str | None) -> tuple[Executor, bool]:
    """The executor to use and whether this run owns it (and must close it)."""
    if isinstance(executor, Executor):
        return executor, False
    ev = config.evaluation
    kind = executor or ev.executor
    return make_executor(kind, workers=ev.workers, threads=ev.threads, address=ev.address,
                         gpus_per_task=ev.gpus_per_task, preload=WORKER_PRELOAD, device=ev.device), True


def evolve(
    config: EvolutionConfig | None,
    run_dir: str | Path,
    *,
    executor: Executor | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    observer: Observer | None = None,
    progress: bool = False,
    write_outputs: bool = True,
) -> EvolutionResult:
    """Run (or, with ``resume=True``, continue) an evolution in ``run_dir``.

    ``config`` is required for a new run, whose ``run_dir`` must be new, empty or a run directory (an existing run
    needs ``overwrite``), in a writable place. On resume it may be None (the run directory's ``config.json`` is
    used) or a config that differs only in how it runs (executor, workers, timeout) or in ``generations``, which
    may grow (extending the run) but not below the generations already finished: anything that would change the
    results is refused, as is a damaged run directory, before any work starts. ``executor`` is an :class:`~evoprune.parallel.Executor` (kept open for the
    caller) or a kind (``"serial"``, ``"process"``, ``"ray"``) overriding ``config.evaluation.executor``.
    Writes ``results.json``, ``fitness.png`` and ``report.md`` at the end unless ``write_outputs`` is false.
    """
    rd = RunDir(run_dir)
    checkpoint, journal = None, {}
    if resume:
        saved = rd.load_config()
        if config is None:
            config = saved
        elif config.fitness_hash() != saved.fitness_hash():
            raise RunDirError(f"the settings given differ from {rd.config_path} in ways that change the results; "
                              "resume with the saved config (only generations and evaluation options may change)")
        checkpoint = rd.read_checkpoint(saved)
        journal = rd.journal([t.name for t in config.tasks], tuple(config.fidelity.levels))
        done = checkpoint.generation if checkpoint is not None else -1
        if config.evolution.generations <= done:
            raise RunDirError(f"{rd.path} has finished generations 0-{done}; resuming it with {config.evolution.generations} "
                              f"generation(s) would cut that short: give --generations {done + 1} or more, or leave "
                              "it out")
        check_output(rd.path, option="run directory (--resume)", directory=True)
    elif config is None:
        raise ConfigError("a new run needs a config (a preset such as 'quick' or a TOML file)")
    else:
        rd.check_new(overwrite=overwrite)
    observer = observer or Observer()
    ex, owned = _executor_for(config, executor)  # before touching the folder: a missing cluster changes nothing
    try:
        if resume:
            write_json_atomic(rd.config_path, config_to_dict(config))
        else:
            rd.create(config_to_dict(config))
    except BaseException:
        if owned:
            ex.close()
        raise
    run = Evolution(config, rd, ex, observer, progress)
    try:
        run.load(checkpoint, journal)
        run.log("resume" if resume else "start", generation=run.state.generation + 1, config=config.name,
                seed=config.seed, executor=ex.describe(), fitness_hash=config.fitness_hash())
        observer.run_started({"config": config, "executor": ex.describe(), "resume_from": run.state.generation + 1,
                              "run_dir": str(rd.path)})
        run.prepare()
        result = run.run()
        run.log("finish", seconds=result.seconds, evaluations=result.evaluations, failures=result.failures,
                best=result.best.formula, best_fitness=result.best.fitness)
        if write_outputs:
            from evoprune.evolve.report import write_outputs as write

            write(result, rd.path)
        return result
    finally:
        if owned:
            ex.close()
        rd.close()
