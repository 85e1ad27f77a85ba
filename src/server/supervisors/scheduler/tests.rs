use super::*;
use crate::domain::job::{Job, JobCommand, JobSpec};
use crate::domain::node::{AgentInfo, Node, NodeCommand};
use crate::domain::pool::{Pool, PoolCommand, PoolSpec};
use crate::domain::spec::CommandLine;
use crate::domain::task::{Task, TaskCommand, TaskSpec};
use crate::domain::Aggregate;
use crate::types::Principal;

/// Feeds the scheduler what the log would carry for commands run on
/// the aggregates (tasks kept, to be assigned and started later).
struct Feed {
    scheduler: Scheduler,
    position: u64,
    account: AccountName,
    pool: PoolId,
    job: JobId,
    job_state: (Job, u64),
    tasks: HashMap<StreamId, (Task, u64)>,
}

impl Feed {
    fn run<A: Aggregate>(
        &mut self,
        stream: &StreamId,
        state: &mut A,
        version: &mut u64,
        command: A::Command,
        principal: Principal,
    ) {
        let at = (version, &mut self.position);
        let envelopes = crate::domain::decide_to_envelopes(state, at, stream, command, principal)
            .expect("accepted");
        for envelope in &envelopes {
            self.scheduler.observe(envelope);
        }
    }

    fn new() -> Feed {
        let mut feed = Feed {
            scheduler: Scheduler::default(),
            position: 0,
            account: AccountName::new("acme").unwrap(),
            pool: PoolId::new("p").unwrap(),
            job: JobId::new("j").unwrap(),
            job_state: (Job::default(), 0),
            tasks: HashMap::new(),
        };
        let (account, pool, job) = (feed.account.clone(), feed.pool.clone(), feed.job.clone());
        let spec = PoolSpec::fixed(pool.clone(), account.clone(), 0, 2);
        let (mut p, mut v) = (Pool::default(), 0);
        let create = PoolCommand::CreatePool { spec };
        feed.run(
            &StreamId::pool(&account, &pool),
            &mut p,
            &mut v,
            create,
            Principal::Admin,
        );
        let spec = JobSpec::on_pool(job.clone(), account.clone(), pool.clone());
        feed.job_command(JobCommand::CreateJob { spec });
        feed
    }

    fn job_command(&mut self, command: JobCommand) {
        let stream = StreamId::job(&self.account, &self.job);
        let (mut state, mut v) = std::mem::take(&mut self.job_state);
        self.run(&stream, &mut state, &mut v, command, Principal::Admin);
        self.job_state = (state, v);
    }

    /// A registered, idle node with 2 slots.
    fn node(&mut self, n: u32) {
        let node = NodeId::new(format!("node-{n}")).unwrap();
        let (account, pool) = (self.account.clone(), self.pool.clone());
        let add = NodeCommand::AddNode {
            account: account.clone(),
            pool: pool.clone(),
            node: node.clone(),
            name: format!("n{n}"),
        };
        let register = NodeCommand::RegisterAgent {
            agent: AgentInfo {
                hostname: format!("host-{n}"),
                address: "127.0.0.1".into(),
                cores: 2,
                memory_mib: 1024,
                task_slots: 2,
                agent_version: "test".into(),
            },
            has_start_task: false,
        };
        let agent = self.agent(&node);
        let stream = StreamId::node(&account, &pool, &node);
        let (mut state, mut v) = (Node::default(), 0);
        self.run(&stream, &mut state, &mut v, add, Principal::Admin);
        self.run(&stream, &mut state, &mut v, register, agent);
    }

    /// The agent of a node of this feed's pool.
    fn agent(&self, node: &NodeId) -> Principal {
        Principal::Node {
            account: self.account.clone(),
            pool: self.pool.clone(),
            node: node.clone(),
        }
    }

    /// Slots held on a node of this feed's pool.
    fn used(&self, node: &NodeId) -> u32 {
        let pool = pool_key(&self.account, &self.pool);
        self.scheduler.node(&pool, node).map_or(0, |n| n.used)
    }

    fn tasks(&mut self, from: u32, count: u32) {
        for i in from..from + count {
            let id = TaskId::new(format!("t{i}")).unwrap();
            let add = TaskCommand::AddTask {
                account: self.account.clone(),
                job: self.job.clone(),
                pool: self.pool.clone(),
                spec: TaskSpec::simple(id.clone(), CommandLine::Shell("true".into())),
                max_task_retries: 0,
            };
            let stream = StreamId::task(&self.account, &self.job, &id);
            let (mut state, mut v) = (Task::default(), 0);
            self.run(&stream, &mut state, &mut v, add, Principal::Admin);
            self.tasks.insert(stream, (state, v));
        }
    }

    fn task(&mut self, stream: &StreamId, command: TaskCommand, principal: Principal) {
        let (mut state, mut v) = self.tasks.remove(stream).expect("a task of this feed");
        self.run(stream, &mut state, &mut v, command, principal);
        self.tasks.insert(stream.clone(), (state, v));
    }

    /// Plans a round and records its assignments; the planned tasks.
    fn plan(&mut self) -> Vec<Planned> {
        let planned = self.scheduler.plan();
        for p in &planned {
            let stream = StreamId::task(&p.account, &p.job, &p.task);
            let assign = TaskCommand::AssignTask {
                node: p.node.clone(),
            };
            self.task(&stream, assign, Principal::Admin);
        }
        planned
    }
}

#[test]
fn a_long_queue_is_prefetched_to_its_end_and_a_short_one_never() {
    let mut feed = Feed::new();
    feed.node(0);
    // Short from the start: only the free slots are filled.
    feed.tasks(0, 10);
    assert_eq!(feed.plan().len(), 2);
    assert_eq!(feed.scheduler.queued_len(), 8);

    let mut feed = Feed::new();
    feed.node(0);
    feed.tasks(0, 150);
    // Long: the free slots, and 16 per slot ahead.
    let ahead = 2 * (1 + PREFETCH_PER_SLOT as usize);
    assert_eq!(feed.plan().len(), ahead);
    feed.node(1);
    assert_eq!(feed.plan().len(), ahead);
    assert_eq!(feed.scheduler.queued_len(), 150 - 2 * ahead);
    // 82 left, no longer a long queue: a new node still gets work
    // ahead, as deep as the queue shared over the slots allows
    // (82 / 6 = 13 per slot).
    feed.node(2);
    assert_eq!(feed.plan().len(), 2 * (1 + 13));
    // 54 left over 8 slots: 6 each.
    feed.node(3);
    assert_eq!(feed.plan().len(), 2 * (1 + 6));
    // 40 left over 10 slots: 4 each, and so on down to one each.
    feed.node(4);
    assert_eq!(feed.plan().len(), 2 * (1 + 4));
    assert_eq!(feed.scheduler.queued_len(), 30);
    for n in 5..20 {
        feed.node(n);
    }
    assert_eq!(feed.plan().len(), 30);
    assert_eq!(feed.scheduler.queued_len(), 0);

    // Work waits behind every busy node now, and a node is idle; but
    // no start is recorded (short tasks report none), so an agent may
    // already run what the picture lists as waiting: nothing moves.
    feed.node(20);
    assert!(feed.scheduler.steals().is_empty());
    // Once both of node-0's slots hold started attempts, what waits
    // behind them moves, as many as the idle node has slots.
    let to_start =
        feed.scheduler
            .to_start(&feed.account, &feed.pool, &NodeId::new("node-0").unwrap());
    for (job, task, attempt) in to_start.into_iter().take(2) {
        let stream = StreamId::task(&feed.account, &job, &task);
        let agent = feed.agent(&NodeId::new("node-0").unwrap());
        feed.task(&stream, TaskCommand::StartTask { attempt }, agent);
    }
    assert_eq!(feed.scheduler.steals().len(), 2);

    // Once the queue ran empty, a new short queue is not prefetched.
    // (Only the idle nodes' free slots: node-20's, whose steals are
    // proposed but not done, and node-21's.)
    feed.node(21);
    feed.tasks(1000, 10);
    assert_eq!(feed.plan().len(), 4);
    assert_eq!(feed.scheduler.queued_len(), 6);
}

#[test]
fn a_disabled_jobs_tasks_wait_out_of_the_rounds_way_and_come_back_in_order() {
    let mut feed = Feed::new();
    feed.tasks(0, 5);
    feed.job_command(JobCommand::DisableJob {
        disable_tasks: crate::domain::job::DisableTasks::Wait,
    });
    // Added while disabled: parked from the start.
    feed.tasks(5, 3);
    feed.node(0);
    assert!(feed.plan().is_empty());
    assert_eq!(feed.scheduler.queued_len(), 8);
    let pool_key = format!("{}/{}", feed.account, feed.pool);
    let figures = feed.scheduler.pool_figures(&pool_key);
    assert_eq!((figures.active_tasks, figures.active_slots), (8, 8));
    let first = StreamId::task(&feed.account, &feed.job, &TaskId::new("t0").unwrap());
    assert!(feed.scheduler.explain(&first).is_some());

    feed.job_command(JobCommand::EnableJob);
    let placed: Vec<String> = feed
        .plan()
        .iter()
        .map(|p| p.task.as_str().to_string())
        .collect();
    assert_eq!(
        placed,
        ["t0", "t1"],
        "in submission order, across the parking"
    );
    assert_eq!(feed.scheduler.queued_len(), 6);
}

#[test]
fn attempts_reported_ended_are_never_handed_out_again_before_their_fold() {
    let mut feed = Feed::new();
    feed.node(0);
    feed.tasks(0, 2);
    assert_eq!(feed.plan().len(), 2);
    let node = NodeId::new("node-0").unwrap();
    let (account, pool) = (feed.account.clone(), feed.pool.clone());
    let listed = feed.scheduler.to_start(&account, &pool, &node);
    assert_eq!(listed.len(), 2);
    // The agent reports the first ended (its completion is recorded but
    // not folded), and names the second with an attempt it never had.
    let (job, first, attempt) = listed[0].clone();
    let (_, second, _) = listed[1].clone();
    let ended = vec![
        (job.clone(), first.clone(), attempt),
        (job.clone(), second.clone(), attempt + 1),
    ];
    feed.scheduler.forget_ended(&account, &pool, &node, ended);
    let left = feed.scheduler.to_start(&account, &pool, &node);
    assert_eq!(left, vec![(job.clone(), second, attempt)]);
    // Its slot stays held until the completion is folded.
    assert_eq!(feed.used(&node), 2);
    let stream = StreamId::task(&account, &job, &first);
    let agent = feed.agent(&node);
    let result = crate::domain::task::TaskResult {
        exit_code: Some(0),
        signal: None,
        duration_ms: 1,
        failure: None,
    };
    let complete = TaskCommand::CompleteTask {
        attempt,
        result,
        outputs: Vec::new(),
    };
    feed.task(&stream, complete, agent);
    assert_eq!(feed.used(&node), 1);
    assert_eq!(feed.scheduler.to_start(&account, &pool, &node).len(), 1);
}
